"""The guard in front of every route that reads or writes events: the per-IP rate limit (the
ingest or the read budget), then the `X-Auth` check, which names the token (leitstand.access).
`admit` is the one place a request is admitted: the lean ingest front (front.py) calls it with
the raw request's parts, `guard(request)` with a Starlette request's; FastAPI routes (all of
them read routes) take it as the typed dependency `Guarded`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import Request

from .ratelimit import RateState
from .service import Service, service


def admit(svc: Service, state: dict[str, Any], peer: str | None, forwarded_for: str | None,
          auth: list[bytes], *, read: bool = False) -> RateState:
    """Count the request against its client's rate limit — LEITSTAND_RATE_LIMIT for ingest,
    LEITSTAND_READ_RATE_LIMIT for reads — before auth, so that guessing a token is limited too;
    then identify the token in `X-Auth` (`auth`: the values of every such header) and count the
    request against the token's own limit, if it has one. `state` is the request's
    `scope["state"]`: `client_ip`, `rate` (its headers go on every answer, errors included: the
    error boundary reads it) and the token (`Access.identify`)."""
    limiter = svc.read_limiter if read else svc.limiter
    client = limiter.client_ip(peer, forwarded_for)
    state["client_ip"] = client
    rate = limiter.hit(client)
    state["rate"] = rate
    svc.access.identify(auth, state)
    return rate


def guard(request: Request, *, read: bool = False) -> RateState:
    """`admit` for a Starlette request."""
    request.state  # noqa: B018 - makes sure `scope["state"]` exists
    return admit(
        service(request),
        request.scope["state"],
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        [value for name, value in request.scope["headers"] if name == b"x-auth"],
        read=read,
    )


async def _read_guard_dependency(request: Request) -> RateState:
    # A coroutine, so that FastAPI runs it on the event loop (a plain function dependency
    # would run in a worker thread).
    return guard(request, read=True)


# For FastAPI routes (the read routes): `rate: Guarded` in the signature admits the request
# before the route runs.
Guarded = Annotated[RateState, Depends(_read_guard_dependency)]
