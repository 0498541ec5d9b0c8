"""`GET /v1/schemas` and `GET /v1/schemas/{domain}`: which schemas are in force (read routes,
the same guard as the others: rate limit, then `X-Auth`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..domains import normalize_domain
from ..errors import NotFound
from ..http.apidoc import RATE_HEADERS, RETRY_AFTER, error
from ..http.auth import guard
from ..http.service import service

router = APIRouter(tags=["read"])

_AUTH: dict[str, Any] = {"security": [{"XAuth": []}], "parameters": [
    {"name": "X-Auth", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "A token (LEITSTAND_TOKEN or LEITSTAND_TOKENS_FILE)."}]}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error("X-Auth missing, repeated, wrong, or its token expired.", RATE_HEADERS),
    429: error("Rate limit for this client IP exceeded (LEITSTAND_READ_RATE_LIMIT, shared by "
               "the read routes), or the token's own `rate_limit`.",
               {**RATE_HEADERS, **RETRY_AFTER}),
}
_LIST_SCHEMA = {
    "type": "object", "required": ["schemas", "reload_error"],
    "properties": {
        "schemas": {"type": "array", "items": {
            "type": "object", "required": ["name", "kind", "file", "sha256"],
            "properties": {
                "name": {"type": "string", "description": "The domain, or the pattern (`*`)."},
                "kind": {"type": "string", "enum": ["domain", "pattern"]},
                "file": {"type": "string", "description": "The file in LEITSTAND_SCHEMA_DIR."},
                "sha256": {"type": "string", "description": "Of the file's bytes."},
            }}},
        "reload_error": {"type": ["string", "null"], "description": "Why the newest files in "
                         "LEITSTAND_SCHEMA_DIR were refused; the schemas listed stay in force."},
    },
}


@router.get(
    "/v1/schemas",
    summary="List schemas",
    response_model=None,
    responses={200: {"description": "The schema files in force (LEITSTAND_SCHEMA_DIR), by name, "
                     "of the domains (or patterns) the token may read or write; empty when no "
                     "directory is set.",
                     "content": {"application/json": {"schema": _LIST_SCHEMA}},
                     "headers": RATE_HEADERS},
               **_ERRORS},
    openapi_extra=_AUTH,
)
async def list_schemas(request: Request) -> Response:
    """Domains and patterns with a schema, each with the sha256 of its file."""
    state = guard(request, read=True)
    access = service(request).access
    schemas = service(request).schemas
    body: dict[str, Any] = {"schemas": [], "reload_error": None}
    if schemas is not None:
        body["schemas"] = [s.summary() for s in schemas.current()
                           if access.may_see_pattern(request, s.name)]
        body["reload_error"] = schemas.error
    return JSONResponse(body, headers=state.headers())


@router.get(
    "/v1/schemas/{domain}",
    summary="The schema of a domain",
    response_model=None,
    responses={200: {"description": "The JSON Schema that applies to the domain, as written in "
                     "its file (an exact file beats a pattern, the longest pattern wins).",
                     "content": {"application/schema+json": {"schema": {"type": "object"}}},
                     "headers": {**RATE_HEADERS,
                                 "X-Schema-File": {"description": "The file it comes from.",
                                                   "schema": {"type": "string"}},
                                 "ETag": {"description": "The file's sha256.",
                                          "schema": {"type": "string"}}}},
               400: error("Invalid domain.", RATE_HEADERS),
               403: error("The token may neither read nor write the domain.", RATE_HEADERS),
               404: error("No schema applies to the domain.", RATE_HEADERS),
               **_ERRORS},
    openapi_extra={**_AUTH, "parameters": [
        *_AUTH["parameters"],
        {"name": "domain", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "The domain (normalised like on ingest)."}]},
)
async def get_schema(request: Request) -> Response:
    """The schema that events of `domain` must match."""
    state = guard(request, read=True)
    name = normalize_domain(request.path_params["domain"])
    request.state.domain = name
    service(request).access.require_read_or_write(request, name)
    schemas = service(request).schemas
    found = None if schemas is None else schemas.for_domain(name)
    if found is None:
        raise NotFound(f"no schema applies to domain {name!r}")
    return JSONResponse(found.document, media_type="application/schema+json", headers={
        **state.headers(), "X-Schema-File": found.file, "ETag": f'"{found.sha256}"'})
