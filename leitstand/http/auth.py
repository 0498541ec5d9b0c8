"""The guard in front of every route that reads or writes events: the per-IP rate limit, then
the `X-Auth` check. `guard(request)` is the one place a request is admitted; FastAPI routes take
it as the typed dependency `Guarded`, the lean ingest routes call it first thing."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from ..errors import Unauthorized
from .ratelimit import RateState
from .service import service

_MAX_AUTH_HEADER = 1024


def guard(request: Request) -> RateState:
    """Count the request against its client's rate limit (before auth, so that guessing the
    token is limited too), then check `X-Auth`. The rate headers go on every answer, errors
    included (`request.state.rate_headers`, read by the error boundary)."""
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


async def _guard_dependency(request: Request) -> RateState:
    # A coroutine, so that FastAPI runs it on the event loop (a plain function dependency
    # would run in a worker thread).
    return guard(request)


# For FastAPI routes: `rate: Guarded` in the signature admits the request before the route runs.
Guarded = Annotated[RateState, Depends(_guard_dependency)]
