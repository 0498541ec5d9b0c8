"""The read routes: `GET /v1/domains`, `/v1/events` (a page after a cursor) and
`/v1/rejections`. Each is admitted by the guard (`Guarded`: the read routes' per-IP rate limit,
then `X-Auth`) and shows only what the token may read (leitstand/access); query parameters are
checked after it (params.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..store.space import storage_space
from .apidoc import AUTH_PARAM, RATE_HEADERS, SECURITY, param
from .auth import Guarded
from .params import (
    CURSOR_PARAM,
    DEFAULT_LIMIT,
    DOMAIN_PARAM,
    MAX_LIMIT,
    NO_DOMAIN_ERRORS,
    READ_ERRORS,
    TAIL_PARAM,
    count_param,
    domain_param,
    start_params,
)
from .rejections import iso_time
from .service import ServiceDep

_Responses = dict[int | str, dict[str, Any]]
_AUTH_ERRORS: _Responses = {k: v for k, v in NO_DOMAIN_ERRORS.items() if k in (401, 403, 429)}
_JSON = "application/json"


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


_DOMAINS_SCHEMA = {
    "type": "object", "required": ["domains", "storage"],
    "properties": {"domains": {"type": "array", "items": {
        "type": "object",
        "required": ["domain", "file", "events", "bytes", "last_event_at", "schema",
                     "disk_bytes", "segments", "oldest_event_at"],
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
            "disk_bytes": {"type": "integer", "description": "Bytes on disk: the active file "
                           "and every retained segment (compressed as stored)."},
            "segments": {"type": "integer", "description": "Closed segments kept in "
                         "archive/<stem>/ (rotation)."},
            "oldest_event_at": {"type": ["string", "null"], "format": "date-time",
                                "description": "When the oldest retained line was written "
                                "(UTC; null: no line retained). Of a file no leitstand writer has "
                                "written to yet: its last change."},
        },
    }}, "storage": {
        "type": "object", "required": ["free_bytes", "min_free_bytes"],
        "description": "The data dir's file system: writes that would leave less than "
        "`min_free_bytes` free get 507 (LEITSTAND_MIN_FREE_BYTES).",
        "properties": {"free_bytes": {"type": ["integer", "null"]},
                       "min_free_bytes": {"type": "integer"}},
    }},
}
_REJECTIONS_SCHEMA = {
    "type": "object", "required": ["rejections"],
    "properties": {"rejections": {"type": "array", "items": {
        "type": "object",
        "required": ["time", "client", "route", "domain", "status", "reason", "token"],
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
            "token": {"type": ["string", "null"],
                      "description": "The name of the token, if it was valid."},
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
    responses={200: {"description": "Every domain with a data file that the token may read, "
                     "sorted by name.",
                     "content": _json_schema(_DOMAINS_SCHEMA), "headers": RATE_HEADERS},
               **_AUTH_ERRORS},
    openapi_extra={"security": SECURITY, "parameters": [AUTH_PARAM]},
)
async def list_domains(request: Request, rate: Guarded, svc: ServiceDep) -> Response:
    """Event count, size and time of the last append per domain (counted incrementally)."""
    svc.access.require_some_read(request)
    infos = await svc.store.domains()
    schemas = svc.schemas
    body: dict[str, Any] = {"domains": [{
        "domain": i.domain, "file": i.file, "events": i.events, "bytes": i.bytes,
        "last_event_at": None if i.last_event_at is None else iso_time(i.last_event_at),
        "schema": None if schemas is None else schemas.file_for(i.domain),
        "disk_bytes": i.disk_bytes, "segments": i.segments,
        "oldest_event_at": None if i.oldest_event_at is None else iso_time(i.oldest_event_at),
    } for i in infos if svc.access.may_read(request, i.domain)]}
    body["storage"] = storage_space(svc.settings.data_dir, svc.settings.min_free_bytes)
    return JSONResponse(body, headers=rate.headers())


@router.get(
    "/v1/events",
    summary="Read events",
    response_model=None,
    responses={200: {"description": "Whole stored lines (NDJSON) after the cursor, oldest "
                     "first; lines not written by leitstand are passed through as they are.",
                     "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                     "headers": {**RATE_HEADERS, **_NEXT_CURSOR}},
               **READ_ERRORS},
    openapi_extra={"security": SECURITY, "parameters": [
        AUTH_PARAM, DOMAIN_PARAM, CURSOR_PARAM,
        param("limit", f"Lines per answer (default {DEFAULT_LIMIT}, capped at {MAX_LIMIT}).",
              {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT}),
        TAIL_PARAM,
    ]},
)
async def read_events(request: Request, rate: Guarded, svc: ServiceDep) -> Response:
    """Page through a domain's events: no cursor and no tail → from the start."""
    domain = domain_param(request)
    svc.access.require_read(request, domain)
    limit = count_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    cursor, tail = start_params(request, request.query_params.get("cursor"))
    page = await svc.store.read(domain, cursor=cursor, limit=limit or 0, tail=tail)
    return Response(
        b"".join(page.lines),
        media_type="application/x-ndjson",
        headers={**rate.headers(), "X-Next-Cursor": page.next_cursor},
    )


@router.get(
    "/v1/rejections",
    summary="Recent rejected requests",
    response_model=None,
    responses={200: {"description": "The last rejected requests of the domains the token "
                     "may read, newest first (never a secret or a body); those without a "
                     "domain only for a token that reads every domain.",
                     "content": _json_schema(_REJECTIONS_SCHEMA), "headers": RATE_HEADERS},
               **NO_DOMAIN_ERRORS},
    openapi_extra={"security": SECURITY, "parameters": [
        AUTH_PARAM,
        param("limit", f"How many (default {DEFAULT_LIMIT}, at most LEITSTAND_REJECTIONS_KEPT).",
              {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT}),
    ]},
)
async def list_rejections(request: Request, rate: Guarded, svc: ServiceDep) -> Response:
    """Integration failures at a glance: who was turned away, where, and why."""
    svc.access.require_some_read(request)
    limit = count_param(request, "limit", DEFAULT_LIMIT, 1, 1_000_000) or DEFAULT_LIMIT
    items = svc.rejections.latest(limit, visible=lambda r: svc.access.may_read(request, r.domain))
    return JSONResponse({"rejections": [r.as_json() for r in items]}, headers=rate.headers())
