"""`GET /v1/whoami`: the token's name and scope, so a client (the web view) can say what it
may see."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..http.apidoc import AUTH_PARAM, RATE_HEADERS, SECURITY
from ..http.auth import Guarded
from ..http.params import NO_DOMAIN_ERRORS
from ..http.service import ServiceDep
from .tokens import Token

router = APIRouter(tags=["read"])

_WHOAMI_SCHEMA = {
    "type": "object",
    "required": ["name", "read", "write", "rate_limit", "expires"],
    "properties": {
        "name": {"type": "string", "description": "The token's name (`default`: "
                 "LEITSTAND_TOKEN)."},
        "read": {"type": "array", "items": {"type": "string"},
                 "description": "Domain patterns it may read: `*`, `name.*` or a domain."},
        "write": {"type": "array", "items": {"type": "string"},
                  "description": "Domain patterns it may write."},
        "rate_limit": {"type": ["string", "null"], "description": "Its own rate limit."},
        "expires": {"type": ["string", "null"], "format": "date-time"},
    },
}


@router.get(
    "/v1/whoami",
    summary="The token's name and scope",
    response_model=None,
    responses={200: {"description": "Who the token in `X-Auth` is and what it may do (never "
                     "its secret or digest).",
                     "content": {"application/json": {"schema": _WHOAMI_SCHEMA}},
                     "headers": RATE_HEADERS},
               **{k: v for k, v in NO_DOMAIN_ERRORS.items() if k in (401, 403, 429)}},
    openapi_extra={"security": SECURITY, "parameters": [AUTH_PARAM]},
)
async def whoami(request: Request, rate: Guarded, svc: ServiceDep) -> Response:
    """For a token that may read (the web view signs in with it); counts against the read
    routes' rate limit."""
    token: Token = svc.access.require_some_read(request)
    return JSONResponse(token.describe(), headers=rate.headers())
