"""The guard in front of every route that reads or writes events: the per-IP rate limit (the
ingest or the read budget), then the `X-Auth` check, which names the token (leitstand.access).
`guard(request)` is the one place a request is admitted; FastAPI routes
(all of them read routes) take it as the typed dependency `Guarded`, the lean ingest routes call
`guard` first thing."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from .ratelimit import RateState
from .service import service


def guard(request: Request, *, read: bool = False) -> RateState:
    """Count the request against its client's rate limit — LEITSTAND_RATE_LIMIT for ingest,
    LEITSTAND_READ_RATE_LIMIT for reads — before auth, so that guessing a token is limited too;
    then identify the token in `X-Auth` (`request.state.token`) and count the request against
    the token's own limit, if it has one. The rate headers go on every answer, errors included
    (`request.state.rate_headers`, read by the error boundary)."""
    svc = service(request)
    limiter = svc.read_limiter if read else svc.limiter
    client = limiter.client_ip(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
    )
    request.state.client_ip = client
    state = limiter.hit(client)
    request.state.rate_headers = state.headers()
    svc.access.authenticate(request)
    return state


async def _read_guard_dependency(request: Request) -> RateState:
    # A coroutine, so that FastAPI runs it on the event loop (a plain function dependency
    # would run in a worker thread).
    return guard(request, read=True)


# For FastAPI routes (the read routes): `rate: Guarded` in the signature admits the request
# before the route runs.
Guarded = Annotated[RateState, Depends(_read_guard_dependency)]
