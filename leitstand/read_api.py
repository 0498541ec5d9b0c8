"""The read routes: domains, events from a cursor, the live stream, rejections, the web view.

All of them (but the web view's static files) go through the same guard as ingest: the per-IP
rate limit, then `X-Auth`. Query parameters are checked here, after the guard, so an
unauthenticated request learns nothing but 401.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .api import _RATE_HEADERS, _RETRY_AFTER, _error, guard, service
from .domains import normalize_domain
from .errors import BadRequest, NotFound
from .events import EventStream, Hub, StreamMetrics, StreamOptions
from .rejections import Rejections, iso_time

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
WEB_DIR = Path(__file__).resolve().parent / "web"
_WEB_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# The page loads only its own files and talks only to its own origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass
class ReadSide:
    """What the read routes share, built once per app: the wake-up hub for stream clients,
    the rejection record, and the stream settings and metrics."""

    hub: Hub
    rejections: Rejections
    stream_options: StreamOptions
    stream_metrics: StreamMetrics


def read_side(request: Request) -> ReadSide:
    side: ReadSide = request.app.state.read_side
    return side


# -- parameters ------------------------------------------------------------------------------------
def _count(request: Request, name: str, default: int | None, low: int, cap: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < low:
        raise BadRequest(f"{name} must be an integer >= {low}")
    return min(int(raw), cap)


def _domain(request: Request) -> str:
    raw = request.query_params.get("domain")
    if raw is None:
        raise BadRequest("domain is required: ?domain=...")
    domain = normalize_domain(raw)
    request.state.domain = domain
    return domain


def _start(request: Request, cursor: str | None) -> tuple[str | None, int | None]:
    tail = _count(request, "tail", None, 0, MAX_LIMIT)
    if tail is not None and cursor is not None:
        raise BadRequest("give either cursor or tail, not both")
    return cursor, tail


# -- OpenAPI -------------------------------------------------------------------------------------
def _param(name: str, description: str, schema: dict[str, Any], where: str = "query",
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description,
            "schema": schema}


_AUTH_PARAM = _param("X-Auth", "The shared secret.", {"type": "string"}, "header", True)
_DOMAIN_PARAM = _param("domain", "The domain (normalised like on ingest).",
                       {"type": "string", "maxLength": 253}, required=True)
_CURSOR_PARAM = _param("cursor", "Opaque position from `X-Next-Cursor` (or an event's `id`).",
                       {"type": "string"})
_TAIL_PARAM = _param("tail", f"Start at the last N events (capped at {MAX_LIMIT}); not "
                     "together with `cursor`.", {"type": "integer", "minimum": 0})
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid parameter: a bad cursor (not one this service handed out), an invalid "
                "domain, a missing domain, or a non-numeric limit/tail.", _RATE_HEADERS),
    401: _error("X-Auth missing, repeated or wrong.", _RATE_HEADERS),
    404: _error("Unknown domain: it has no data file.", _RATE_HEADERS),
    429: _error("Rate limit for this client IP exceeded (shared with the ingest routes).",
                {**_RATE_HEADERS, **_RETRY_AFTER}),
}
_NO_DOMAIN_ERRORS = {k: v for k, v in READ_ERRORS.items() if k != 404}
_AUTH_ERRORS = {k: v for k, v in READ_ERRORS.items() if k in (401, 429)}
_JSON = "application/json"


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


_DOMAINS_SCHEMA = {
    "type": "object", "required": ["domains"],
    "properties": {"domains": {"type": "array", "items": {
        "type": "object",
        "required": ["domain", "file", "events", "bytes", "last_event_at", "schema"],
        "properties": {
            "domain": {"type": "string"},
            "file": {"type": "string", "description": "The data file in LEITSTAND_DATA_DIR."},
            "events": {"type": "integer", "description": "Whole lines in the file."},
            "bytes": {"type": "integer", "description": "Bytes of whole lines."},
            "last_event_at": {"type": ["string", "null"], "format": "date-time",
                              "description": "When the file was last appended to (UTC)."},
            "schema": {"type": ["string", "null"], "description": "The file in "
                       "LEITSTAND_SCHEMA_DIR whose schema the domain's events must match "
                       "(null: none applies)."},
        },
    }}},
}
_REJECTIONS_SCHEMA = {
    "type": "object", "required": ["rejections"],
    "properties": {"rejections": {"type": "array", "items": {
        "type": "object",
        "required": ["time", "client", "route", "domain", "status", "reason"],
        "properties": {
            "time": {"type": "string", "format": "date-time"},
            "client": {"type": "string", "description": "Client IP (as the rate limit sees it)."},
            "route": {"type": "string"},
            "domain": {"type": ["string", "null"]},
            "status": {"type": "integer"},
            "reason": {"type": "string", "description": "The `detail` the client was given."},
            "errors": {"type": "array", "description": "Schema rejections (422) only: the "
                       "first errors, as in the answer's `errors`.",
                       "items": {"$ref": "#/components/schemas/SchemaError"}},
        },
    }}},
}
_NEXT_CURSOR = {"X-Next-Cursor": {
    "description": "Pass it back as `cursor` to continue after the last line (also sent when "
    "the body is empty).", "schema": {"type": "string"}}}

router = APIRouter(tags=["read"])


@router.get(
    "/v1/domains",
    summary="List domains",
    response_model=None,
    responses={200: {"description": "Every domain with a data file, sorted by name.",
                     "content": _json_schema(_DOMAINS_SCHEMA), "headers": _RATE_HEADERS},
               **_AUTH_ERRORS},
    openapi_extra={"security": [{"XAuth": []}], "parameters": [_AUTH_PARAM]},
)
async def list_domains(request: Request) -> Response:
    """Event count, size and time of the last append per domain (counted incrementally)."""
    state = guard(request)
    infos = await service(request).store.domains()
    schemas = service(request).schemas
    body = {"domains": [{
        "domain": i.domain, "file": i.file, "events": i.events, "bytes": i.bytes,
        "last_event_at": None if i.last_event_at is None else iso_time(i.last_event_at),
        "schema": None if schemas is None else schemas.file_for(i.domain),
    } for i in infos]}
    return JSONResponse(body, headers=state.headers())


@router.get(
    "/v1/events",
    summary="Read events",
    response_model=None,
    responses={200: {"description": "Whole stored lines (NDJSON) after the cursor, oldest "
                     "first; lines not written by leitstand are passed through as they are.",
                     "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                     "headers": {**_RATE_HEADERS, **_NEXT_CURSOR}},
               **READ_ERRORS},
    openapi_extra={"security": [{"XAuth": []}], "parameters": [
        _AUTH_PARAM, _DOMAIN_PARAM, _CURSOR_PARAM,
        _param("limit", f"Lines per answer (default {DEFAULT_LIMIT}, capped at {MAX_LIMIT}).",
               {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT}),
        _TAIL_PARAM,
    ]},
)
async def read_events(request: Request) -> Response:
    """Page through a domain's events: no cursor and no tail → from the start."""
    state = guard(request)
    domain = _domain(request)
    limit = _count(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    cursor, tail = _start(request, request.query_params.get("cursor"))
    batch = await service(request).store.read(domain, cursor=cursor, limit=limit or 0, tail=tail)
    return Response(
        b"".join(batch.lines),
        media_type="application/x-ndjson",
        headers={**state.headers(), "X-Next-Cursor": batch.next_cursor},
    )


@router.get(
    "/v1/stream",
    summary="Follow events (Server-Sent Events)",
    response_model=None,
    responses={200: {"description": "`text/event-stream`: per stored line one event with "
                     "`id: <cursor after the line>` and `data: <the line>`. Resume with "
                     "`Last-Event-ID` (or `?cursor=`); without either, from now on (or the "
                     "last `tail` events first). A client that reads nothing for "
                     "LEITSTAND_STREAM_SEND_TIMEOUT seconds is sent `event: disconnect` with "
                     "`data: {\"reason\": ...}` and the stream ends.",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}},
                     "headers": _RATE_HEADERS},
               **READ_ERRORS},
    openapi_extra={"security": [{"XAuth": []}], "parameters": [
        _AUTH_PARAM, _DOMAIN_PARAM, _CURSOR_PARAM, _TAIL_PARAM,
        _param("Last-Event-ID", "The last `id` received; takes precedence over `cursor` and "
               "`tail`.",
               {"type": "string"}, "header"),
    ]},
)
async def stream_events(request: Request) -> Response:
    """Live events of one domain, as they are acknowledged."""
    state = guard(request)
    domain = _domain(request)
    # A reconnecting client repeats its URL (maybe with `tail`): Last-Event-ID wins over both.
    last_id = request.headers.get("last-event-id")
    if last_id:
        cursor, tail = last_id, None
    else:
        cursor, tail = _start(request, request.query_params.get("cursor"))
    svc, side = service(request), read_side(request)
    first = await svc.store.read(
        domain, cursor=cursor, limit=side.stream_options.page,
        tail=tail if tail is not None or cursor is not None else 0,
    )
    return EventStream(
        store=svc.store, hub=side.hub, domain=domain, first=first,
        client=request.state.client_ip, options=side.stream_options,
        metrics=side.stream_metrics, headers=state.headers(),
    )


@router.get(
    "/v1/rejections",
    summary="Recent rejected requests",
    response_model=None,
    responses={200: {"description": "The last rejected requests, newest first (never a token "
                     "or a body).", "content": _json_schema(_REJECTIONS_SCHEMA),
                     "headers": _RATE_HEADERS},
               **_NO_DOMAIN_ERRORS},
    openapi_extra={"security": [{"XAuth": []}], "parameters": [
        _AUTH_PARAM,
        _param("limit", f"How many (default {DEFAULT_LIMIT}, at most LEITSTAND_REJECTIONS_KEPT).",
               {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT}),
    ]},
)
async def list_rejections(request: Request) -> Response:
    """Integration failures at a glance: who was turned away, where, and why."""
    state = guard(request)
    limit = _count(request, "limit", DEFAULT_LIMIT, 1, 1_000_000) or DEFAULT_LIMIT
    items = read_side(request).rejections.latest(limit)
    return JSONResponse({"rejections": [r.as_json() for r in items]}, headers=state.headers())


# -- the web view ----------------------------------------------------------------------------------
@router.get("/", include_in_schema=False)
async def web_index() -> Response:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers=_PAGE_HEADERS)


@router.get("/web/{name}", include_in_schema=False)
async def web_file(name: str) -> Response:
    media = _WEB_FILES.get(name)
    if media is None:
        raise NotFound("no such file")
    return FileResponse(WEB_DIR / name, media_type=f"{media}; charset=utf-8",
                        headers=_PAGE_HEADERS)
