"""The ingest endpoints — `POST /v1/ingest` and the deprecated `POST /ingest/{domain}` — with
their parameters, their answers and their OpenAPI operations, all defined here.

They are `LeanRoute`s: the lean front (front.py), the app's outermost ASGI callable, serves
them from the raw ASGI scope, with no per-request framework objects, and answers their errors
through the app's one error boundary. The same routes sit in the FastAPI router, for the
OpenAPI document and for the edges of routing (trailing slashes, 405 with `Allow`), which the
front leaves to the router. They skip FastAPI's dependency solving and validation: the
endpoints take nothing that FastAPI could validate (one optional string).

One request, in order (`ingest`):
  1. `admit`: rate limit per client IP, then `X-Auth` names the token (auth.py);
  2. `read_ingest_body`: the whole body, bounded and with a deadline, then `encode_events`
     (decode.py): JSON/NDJSON → one validated, compact line per event, domain settled; then
     may the token write that domain (403, leitstand/access), then the domain's JSON Schema
     (leitstand/schemas, if LEITSTAND_SCHEMA_DIR is set);
  3. `store.append` with the `Idempotency-Key`, durable before it returns;
  4. `hub.publish`: wake the stream clients of the domain; then the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timezone
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect

from ..decode import DecodedBatch, encode_events, media_kind, read_body
from ..errors import BadRequest, BodyTimeout
from ..store import AppendResult, Idempotency
from .apidoc import RATE_HEADERS, RETRY_AFTER, SECURITY, error
from .auth import admit
from .deadlines import within
from .front import Answer, IngestCall, LeanRoute, answer
from .ratelimit import RateState

# The first release deprecates the legacy route; it is removed six months later.
DEPRECATED_SINCE = datetime(2026, 11, 26, tzinfo=timezone.utc)
SUNSET = datetime(2027, 5, 26, tzinfo=timezone.utc)
LEGACY_HEADERS = {
    "Deprecation": f"@{int(DEPRECATED_SINCE.timestamp())}",
    "Sunset": format_datetime(SUNSET, usegmt=True),
    "Link": '</v1/ingest>; rel="successor-version"',
}
_LEGACY_RAW = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in LEGACY_HEADERS.items()]
_REPLAYED = (b"idempotent-replayed", b"true")
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_MAX_IDEMPOTENCY_KEY = 255


async def ingest_v1(call: IngestCall) -> Answer:
    """Append events to the domain's JSONL file; answer once they are durable."""
    rate, domain, result = await ingest(call, _domain_in_query(call.scope["query_string"]))
    headers = rate.raw_headers()
    if result.replayed:
        headers.append(_REPLAYED)
    body = orjson.dumps({"status": "accepted", "accepted": result.accepted, "domain": domain})
    return answer(202, headers, body, _JSON)


async def ingest_legacy(call: IngestCall) -> Answer:
    """The pre-v1 route: same bodies, answers `ok`. Use `POST /v1/ingest?domain=...`."""
    # Every answer of this route, errors included, says that it is deprecated.
    call.state["route_headers"] = LEGACY_HEADERS
    rate, _, _ = await ingest(call, call.scope["path_params"]["domain"])
    return answer(200, [*_LEGACY_RAW, *rate.raw_headers()], b"ok", _TEXT)


async def ingest(call: IngestCall, domain_param: str | None,
                 ) -> tuple[RateState, str, AppendResult]:
    """Admit, decode, store, wake the streams (the steps in the module docstring)."""
    svc = call.svc
    rate = admit(svc, call.state, call.peer, call.header(b"x-forwarded-for"), call.auth)
    batch = await read_ingest_body(call, domain_param)
    result = await svc.store.append(batch.domain, batch.lines,
                                    idempotency_of(call, batch.lines))
    svc.hub.publish(batch.domain)
    if not result.replayed:
        svc.access.stored(call.state["token"], result.accepted)
    return rate, batch.domain, result


async def read_ingest_body(call: IngestCall, domain_param: str | None) -> DecodedBatch:
    """The request's events as stored lines, all for one domain."""
    svc = call.svc
    settings = svc.settings
    kind = media_kind(call.header(b"content-type"))
    timeout = settings.body_timeout
    try:
        # The whole body is read before the store is touched, so a slow client holds no lock;
        # the deadline frees the connection from a client that never finishes.
        body = await within(
            read_body(
                call.body_chunks(),
                content_length=call.header(b"content-length"),
                content_encoding=call.header(b"content-encoding"),
                limit=settings.max_body,
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
    schemas = svc.schemas
    state = call.state

    def check(domain: str, events: Sequence[Any]) -> None:
        # Once the batch's domain is known: may the token write it (403, the whole batch),
        # then the schema (422) — a token never learns another domain's schema errors.
        svc.access.require_write(state, domain)
        if schemas is not None:
            schemas.check(domain, events)

    return encode_events(body, kind, domain_param=domain_param, max_events=settings.max_events,
                         check=check)


def idempotency_of(call: IngestCall, lines: list[bytes]) -> Idempotency | None:
    key = call.header(b"idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise BadRequest(
            f"Idempotency-Key must be 1-{_MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        )
    return Idempotency.for_lines(key, lines)


@lru_cache(maxsize=256)
def _domain_in_query(query_string: bytes) -> str | None:
    """`?domain=`; repeated, the last one wins (as Starlette's `QueryParams.get`). Cached per
    raw query string: producers send the same one again and again, and parsing it is ~5% of a
    request (bench/notes.md)."""
    return QueryParams(query_string).get("domain")


# -- OpenAPI -----------------------------------------------------------------------------------
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
_DEPRECATION_HEADERS = {
    "Deprecation": {"description": "RFC 9745: `@<epoch seconds>`, deprecated since then.",
                    "schema": {"type": "string", "example": LEGACY_HEADERS["Deprecation"]}},
    "Sunset": {"description": "RFC 8594: HTTP-date after which the route is removed.",
               "schema": {"type": "string", "example": LEGACY_HEADERS["Sunset"]}},
    "Link": {"description": "The successor route.",
             "schema": {"type": "string", "example": LEGACY_HEADERS["Link"]}},
}
_HEADER_PARAMS = [
    {"name": "X-Auth", "in": "header", "required": True,
     "schema": {"type": "string"},
     "description": "A token (LEITSTAND_TOKEN or LEITSTAND_TOKENS_FILE)."},
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "schema": {"type": "string", "maxLength": 255},
     "description": "Retries with the same key and body are stored once."},
]


def ingest_errors(extra: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The error answers of an ingest route; `extra`: headers every answer of the route has."""
    rate = {**RATE_HEADERS, **(extra or {})}
    return {
        "400": error("Invalid input: bad JSON or UTF-8, NaN/Infinity, nesting too deep, a "
                     "non-object item, an integer beyond 64 bits, an invalid domain, a domain "
                     "mismatch, no domain, a broken gzip stream, or a bad header.", rate),
        "401": error("X-Auth missing, repeated, wrong, or its token expired.", rate),
        "403": error("The token may not write this domain (its `write` patterns in "
                     "LEITSTAND_TOKENS_FILE); nothing was stored.", rate),
        "408": error("The body was not complete within LEITSTAND_BODY_TIMEOUT (slow client); "
                     "the connection is closed.", rate),
        "409": error("A long domain whose shortened file name (prefix and 8 hex digits of its "
                     "SHA-256) already belongs to another domain; nothing was stored.", rate),
        "413": error("Body (raw or decompressed) larger than LEITSTAND_MAX_BODY, or more "
                     "events than LEITSTAND_MAX_EVENTS.", rate),
        "415": error("Unsupported Content-Type or Content-Encoding.", rate),
        "422": error("Events do not match their domain's JSON Schema (LEITSTAND_SCHEMA_DIR; "
                     "nothing of the batch is stored): `errors` lists the first 20 errors "
                     "(`index`, `path`, `message`), `error_count` counts all. Or: "
                     "Idempotency-Key already used with a different body (`detail` only).",
                     rate),
        "429": error("Rate limit for this client IP exceeded (counted across all ingest "
                     "routes, before auth), or the token's own `rate_limit`.",
                     {**rate, **RETRY_AFTER}),
        "500": error("The domain's data file is not a regular file (e.g. a planted symlink), "
                     "or an unexpected error.", extra),
        "503": error("The domain file stayed locked past LEITSTAND_LOCK_TIMEOUT (`lock "
                     "timeout`), or storage failed; nothing was stored.", {**rate, **RETRY_AFTER}),
        "507": error("Disk full, or the write would leave less than LEITSTAND_MIN_FREE_BYTES "
                     "free; nothing was stored.", {**rate, **RETRY_AFTER}),
    }


_V1_OPERATION = {
    "tags": ["ingest"],
    "summary": "Ingest events",
    "description": ingest_v1.__doc__,
    "operationId": "ingest_v1_v1_ingest_post",
    "parameters": [
        {"name": "domain", "in": "query", "required": False,
         "schema": {"anyOf": [{"type": "string"}, {"type": "null"}],
                    "description": "Target domain; else taken from the events' `domain` field.",
                    "title": "Domain"},
         "description": "Target domain; else taken from the events' `domain` field."},
        *_HEADER_PARAMS,
    ],
    "responses": {
        "202": {
            "description": "Stored (and fsynced, unless LEITSTAND_FSYNC=off). "
            "`Idempotent-Replayed: true` when an earlier request with the same key stored it.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
            "headers": RATE_HEADERS,
        },
        **ingest_errors(),
    },
    "requestBody": _EVENTS_BODY,
    "security": SECURITY,
}
_LEGACY_OPERATION = {
    "tags": ["ingest"],
    "summary": "Ingest events (deprecated)",
    "description": ingest_legacy.__doc__,
    "operationId": "ingest_legacy_ingest__domain__post",
    "deprecated": True,
    "parameters": [
        {"name": "domain", "in": "path", "required": True,
         "schema": {"type": "string", "title": "Domain"}},
        *_HEADER_PARAMS,
    ],
    "responses": {
        "200": {
            "description": "Stored. Deprecated: use POST /v1/ingest before the Sunset date.",
            "content": {"text/plain": {"schema": {"type": "string", "example": "ok"}}},
            "headers": {**RATE_HEADERS, **_DEPRECATION_HEADERS},
        },
        **ingest_errors(_DEPRECATION_HEADERS),
    },
    "requestBody": _EVENTS_BODY,
    "security": SECURITY,
}

ROUTES = [
    LeanRoute("/v1/ingest", ingest_v1, method="POST", operation=_V1_OPERATION),
    LeanRoute("/ingest/{domain}", ingest_legacy, method="POST", operation=_LEGACY_OPERATION),
]
