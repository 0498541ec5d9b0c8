"""HTTP routes. Thin: guard (rate limit, auth) → read and decode the body → store → answer."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from . import __version__
from .config import Settings
from .decode import encode_events, media_kind, read_body
from .errors import BadRequest, BodyTimeout, Unauthorized
from .events import Hub
from .metrics import Metrics
from .ratelimit import RateLimiter, RateState
from .schemas import Schemas
from .store import Idempotency, Store

# The first release deprecates the legacy route; it is removed six months later.
DEPRECATED_SINCE = datetime(2026, 11, 26, tzinfo=timezone.utc)
SUNSET = datetime(2027, 5, 26, tzinfo=timezone.utc)
LEGACY_HEADERS = {
    "Deprecation": f"@{int(DEPRECATED_SINCE.timestamp())}",
    "Sunset": format_datetime(SUNSET, usegmt=True),
    "Link": '</v1/ingest>; rel="successor-version"',
}
_MAX_AUTH_HEADER = 1024
_MAX_IDEMPOTENCY_KEY = 255
_T = TypeVar("_T")


@dataclass
class Service:
    """Everything the routes need, built once per app by `create_app`."""

    settings: Settings
    store: Store
    limiter: RateLimiter
    metrics: Metrics
    tokens: tuple[bytes, ...]
    hub: Hub = field(default_factory=Hub)  # wakes stream clients after an ack (events.py)
    schemas: Schemas | None = None  # LEITSTAND_SCHEMA_DIR; None: events are not checked


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def guard(request: Request) -> RateState:
    """Count the request against its client's rate limit (before auth, so that guessing the
    token is limited too), then check `X-Auth`. Rate headers go on every answer."""
    svc = service(request)
    client = svc.limiter.client_ip(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
    )
    request.state.client_ip = client
    state = svc.limiter.hit(client)
    request.state.rate_headers = state.headers()
    check_token(request.scope["headers"], svc.tokens)
    return state


def check_token(headers: list[tuple[bytes, bytes]], tokens: tuple[bytes, ...]) -> None:
    """Exactly one `X-Auth` header, equal (constant time, as bytes) to one of `tokens`."""
    given = [value for name, value in headers if name == b"x-auth"]
    if len(given) != 1:
        raise Unauthorized("missing X-Auth header" if not given else "more than one X-Auth header")
    value = given[0]
    # Compare against every token (no early exit); an oversized value never matches, and is
    # not cut down first, so that a long value starting with a token cannot pass.
    matches = [hmac.compare_digest(value, token) for token in tokens]
    if len(value) > _MAX_AUTH_HEADER or not any(matches):
        raise Unauthorized("invalid X-Auth token")


async def read_events(request: Request, domain_param: str | None) -> tuple[str, list[bytes]]:
    svc = service(request)
    kind = media_kind(request.headers.get("content-type"))
    timeout = svc.settings.body_timeout
    try:
        # The whole body is read before the store is touched, so a slow client holds no lock;
        # the deadline frees the connection from a client that never finishes.
        body = await _within(
            read_body(
                request.stream(),
                content_length=request.headers.get("content-length"),
                content_encoding=request.headers.get("content-encoding"),
                limit=svc.settings.max_body,
            ),
            timeout,
        )
    except ClientDisconnect as exc:
        raise BadRequest("client disconnected before the body was complete") from exc
    except asyncio.TimeoutError as exc:
        raise BodyTimeout(
            f"the body was not complete within {timeout:g} s (LEITSTAND_BODY_TIMEOUT)",
            headers={"Connection": "close"},
        ) from exc
    batch = encode_events(
        body, kind, domain_param=domain_param, max_events=svc.settings.max_events,
        check=None if svc.schemas is None else svc.schemas.check,
    )
    return batch.domain, batch.lines


_TIMEOUT = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _within(awaitable: Awaitable[_T], seconds: float) -> _T:
    """`asyncio.wait_for`, without its extra task per call where Python has `asyncio.timeout`
    (~15 us per request, bench/notes.md). Raises `TimeoutError` either way."""
    if _TIMEOUT is None:
        return await asyncio.wait_for(awaitable, seconds)
    async with _TIMEOUT(seconds):
        return await awaitable


def idempotency_of(request: Request, lines: list[bytes]) -> Idempotency | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise BadRequest(
            f"Idempotency-Key must be 1-{_MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        )
    return Idempotency.for_lines(key, lines)


async def ingest(request: Request, domain_param: str | None) -> tuple[str, int, bool, RateState]:
    state = guard(request)
    domain, lines = await read_events(request, domain_param)
    result = await service(request).store.append(domain, lines, idempotency_of(request, lines))
    service(request).hub.publish(domain)
    return domain, result.accepted, result.replayed, state


# -- OpenAPI descriptions ---------------------------------------------------------------------
_EVENTS_BODY = {
    "required": True,
    "description": "One event (a JSON object), an array of events, or NDJSON (one object per "
    "line). May be gzip-compressed (`Content-Encoding: gzip`) and sent chunked.",
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Event"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Event"},
                     "minItems": 1},
                ]
            },
            "example": {"domain": "aussen", "event": "demo", "status": "ok"},
        },
        "application/x-ndjson": {
            "schema": {"type": "string"},
            "example": '{"domain":"aussen","event":"a"}\n{"domain":"aussen","event":"b"}\n',
        },
    },
}
_RATE_HEADERS = {
    "X-RateLimit-Limit": {"description": "Requests allowed per window.",
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in the current window.",
                              "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Seconds until the window frees up.",
                          "schema": {"type": "integer"}},
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer"}}}
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _ERROR}
    if headers:
        out["headers"] = headers
    return out


_DEPRECATION_HEADERS = {
    "Deprecation": {"description": "RFC 9745: `@<epoch seconds>`, deprecated since then.",
                    "schema": {"type": "string", "example": LEGACY_HEADERS["Deprecation"]}},
    "Sunset": {"description": "RFC 8594: HTTP-date after which the route is removed.",
               "schema": {"type": "string", "example": LEGACY_HEADERS["Sunset"]}},
    "Link": {"description": "The successor route.",
             "schema": {"type": "string", "example": LEGACY_HEADERS["Link"]}},
}


def ingest_errors(extra: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """The error answers of an ingest route; `extra`: headers every answer of the route has."""
    rate = {**_RATE_HEADERS, **(extra or {})}
    always = extra or None
    return {
        400: _error("Invalid input: bad JSON or UTF-8, NaN/Infinity, nesting too deep, a "
                    "non-object item, an integer beyond 64 bits, an invalid domain, a domain "
                    "mismatch, no domain, a broken gzip stream, or a bad header.", rate),
        401: _error("X-Auth missing, repeated or wrong.", rate),
        408: _error("The body was not complete within LEITSTAND_BODY_TIMEOUT (slow client); "
                    "the connection is closed.", rate),
        413: _error("Body (raw or decompressed) larger than LEITSTAND_MAX_BODY, or more events "
                    "than LEITSTAND_MAX_EVENTS.", rate),
        415: _error("Unsupported Content-Type or Content-Encoding.", rate),
        422: _error("Events do not match their domain's JSON Schema (LEITSTAND_SCHEMA_DIR; "
                    "nothing of the batch is stored): `errors` lists the first 20 errors "
                    "(`index`, `path`, `message`), `error_count` counts all. Or: "
                    "Idempotency-Key already used with a different body (`detail` only).", rate),
        429: _error("Rate limit for this client IP exceeded (counted across all ingest routes, "
                    "before auth).", {**rate, **_RETRY_AFTER}),
        500: _error("The domain's data file is not a regular file (e.g. a planted symlink), or "
                    "an unexpected error.", always),
        503: _error("The domain file stayed locked past LEITSTAND_LOCK_TIMEOUT (`lock timeout`), "
                    "or storage failed; nothing was stored.", {**rate, **_RETRY_AFTER}),
        507: _error("Disk full; nothing was stored.", {**rate, **_RETRY_AFTER}),
    }


_AUTH = [{"XAuth": []}]

router = APIRouter()


@router.post(
    "/v1/ingest",
    status_code=202,
    summary="Ingest events",
    tags=["ingest"],
    response_model=None,
    responses={
        202: {
            "description": "Stored (and fsynced, unless LEITSTAND_FSYNC=off). "
            "`Idempotent-Replayed: true` when an earlier request with the same key stored it.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
            "headers": _RATE_HEADERS,
        },
        **ingest_errors(),
    },
    openapi_extra={
        "requestBody": _EVENTS_BODY,
        "security": _AUTH,
        "parameters": [
            {"name": "X-Auth", "in": "header", "required": True,
             "schema": {"type": "string"}, "description": "The shared secret."},
            {"name": "Idempotency-Key", "in": "header", "required": False,
             "schema": {"type": "string", "maxLength": 255},
             "description": "Retries with the same key and body are stored once."},
        ],
    },
)
async def ingest_v1(
    request: Request,
    domain: str | None = Query(
        None, description="Target domain; else taken from the events' `domain` field."
    ),
) -> Response:
    """Append events to the domain's JSONL file; answer once they are durable."""
    name, accepted, replayed, state = await ingest(request, domain)
    headers = state.headers()
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        {"status": "accepted", "accepted": accepted, "domain": name},
        status_code=202,
        headers=headers,
    )


@router.post(
    "/ingest/{domain}",
    deprecated=True,
    summary="Ingest events (deprecated)",
    tags=["ingest"],
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Stored. Deprecated: use POST /v1/ingest before the Sunset date.",
            "content": {"text/plain": {"schema": {"type": "string", "example": "ok"}}},
            "headers": {**_RATE_HEADERS, **_DEPRECATION_HEADERS},
        },
        **ingest_errors(_DEPRECATION_HEADERS),
    },
    openapi_extra={
        "requestBody": _EVENTS_BODY,
        "security": _AUTH,
        "parameters": [
            {"name": "X-Auth", "in": "header", "required": True,
             "schema": {"type": "string"}, "description": "The shared secret."},
            {"name": "Idempotency-Key", "in": "header", "required": False,
             "schema": {"type": "string", "maxLength": 255},
             "description": "Retries with the same key and body are stored once."},
        ],
    },
)
async def ingest_legacy(request: Request, domain: str) -> Response:
    """The pre-v1 route: same bodies, answers `ok`. Use `POST /v1/ingest?domain=...`."""
    # Every answer of this route, errors included, says that it is deprecated.
    request.state.route_headers = LEGACY_HEADERS
    await ingest(request, domain)
    return PlainTextResponse(
        "ok", headers={**LEGACY_HEADERS, **request.state.rate_headers}
    )


@router.get(
    "/health",
    tags=["operations"],
    summary="Liveness, and the storage backend's state",
    response_model=None,
    responses={
        200: {"description": "`{\"status\": \"ok\"}`; with LEITSTAND_BACKEND=nats also "
              "`backend` (`connected`, `stream`).",
              "content": {"application/json": {"schema": {"type": "object"}}}},
        503: {"description": "The backend cannot store now (nats: not connected, or the stream "
              "does not answer); ingest answers 503 too.",
              "content": {"application/json": {"schema": {"type": "object"}}},
              "headers": _RETRY_AFTER},
    },
)
async def health(request: Request) -> Response:
    """`ok`; a backend that can be unreachable (nats) reports its state, and 503 while down."""
    health = await service(request).store.health()
    body: dict[str, Any] = {"status": "ok" if health.ok else "unavailable"}
    if health.backend is not None:
        body["backend"] = health.backend
    return JSONResponse(
        body,
        status_code=200 if health.ok else 503,
        headers=None if health.ok else {"Retry-After": "5"},
    )


@router.get("/version", tags=["operations"], summary="Service version")
async def version() -> dict[str, str]:
    return {"version": __version__, "api": "v1"}


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    return Response(
        service(request).metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
