"""The read routes' query parameters: parsed after the guard (an unauthenticated request learns
nothing but 401), and described once for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ..domains import normalize_domain
from ..errors import BadRequest
from .apidoc import RATE_HEADERS, RETRY_AFTER, error, param

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def count_param(request: Request, name: str, default: int | None, low: int,
                cap: int) -> int | None:
    """`?name=` as an integer >= `low`, capped at `cap`; `default` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < low:
        raise BadRequest(f"{name} must be an integer >= {low}")
    return min(int(raw), cap)


def domain_param(request: Request) -> str:
    """`?domain=`, required and normalised (remembered for the rejection record)."""
    raw = request.query_params.get("domain")
    if raw is None:
        raise BadRequest("domain is required: ?domain=...")
    domain = normalize_domain(raw)
    request.state.domain = domain
    return domain


def start_params(request: Request, cursor: str | None) -> tuple[str | None, int | None]:
    """Where reading starts: (cursor, tail); at most one of them is given."""
    tail = count_param(request, "tail", None, 0, MAX_LIMIT)
    if tail is not None and cursor is not None:
        raise BadRequest("give either cursor or tail, not both")
    return cursor, tail


# -- OpenAPI -----------------------------------------------------------------------------------
DOMAIN_PARAM = param("domain", "The domain (normalised like on ingest).",
                     {"type": "string", "maxLength": 253}, required=True)
CURSOR_PARAM = param("cursor", "Opaque position from `X-Next-Cursor` (or an event's `id`).",
                     {"type": "string"})
TAIL_PARAM = param("tail", f"Start at the last N events (capped at {MAX_LIMIT}); not "
                   "together with `cursor`.", {"type": "integer", "minimum": 0})
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error("Invalid parameter: a bad cursor (not one this service handed out), an invalid "
               "domain, a missing domain, or a non-numeric limit/tail.", RATE_HEADERS),
    401: error("X-Auth missing, repeated, wrong, or its token expired.", RATE_HEADERS),
    403: error("The token may not read this domain (its `read` patterns in "
               "LEITSTAND_TOKENS_FILE).", RATE_HEADERS),
    404: error("Unknown domain: it has no data file.", RATE_HEADERS),
    410: error("The cursor points into a segment that retention has deleted. The answer's "
               "`next_cursor` (also in `X-Next-Cursor`) is the oldest retained line.",
               RATE_HEADERS),
    429: error("Rate limit for this client IP exceeded (LEITSTAND_READ_RATE_LIMIT, shared by "
               "the read routes), or the token's own `rate_limit`.",
               {**RATE_HEADERS, **RETRY_AFTER}),
}
# For the routes that are not about one domain: only a token that reads nothing gets 403.
NO_DOMAIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **{k: v for k, v in READ_ERRORS.items() if k not in (404, 410)},
    403: error("The token may not read any domain (a producer's token).", RATE_HEADERS),
}
