"""`GET /v1/stream`: the live events of one domain as Server-Sent Events (the response is
sse.py's `EventStream`). Admitted like every read route (`Guarded`), for a token that may read
the domain; the stream ends when the token loses that right (the tokens file changed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .apidoc import AUTH_PARAM, RATE_HEADERS, SECURITY, param
from .auth import Guarded
from .params import CURSOR_PARAM, DOMAIN_PARAM, READ_ERRORS, TAIL_PARAM, domain_param, start_params
from .service import ServiceDep
from .sse import EventStream

router = APIRouter(tags=["read"])


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
                     "headers": RATE_HEADERS},
               **READ_ERRORS},
    openapi_extra={"security": SECURITY, "parameters": [
        AUTH_PARAM, DOMAIN_PARAM, CURSOR_PARAM, TAIL_PARAM,
        param("Last-Event-ID", "The last `id` received; takes precedence over `cursor` and "
              "`tail`.", {"type": "string"}, "header"),
    ]},
)
async def stream_events(request: Request, rate: Guarded, svc: ServiceDep) -> Response:
    """Live events of one domain, as they are acknowledged."""
    domain = domain_param(request)
    svc.access.require_read(request, domain)
    token = request.state.token
    # A reconnecting client repeats its URL (maybe with `tail`): Last-Event-ID wins over both.
    last_id = request.headers.get("last-event-id")
    cursor: str | None
    tail: int | None
    if last_id:
        cursor, tail = last_id, None
    else:
        cursor, tail = start_params(request, request.query_params.get("cursor"))
    first = await svc.store.read(
        domain, cursor=cursor, limit=svc.stream_options.page,
        tail=tail if tail is not None or cursor is not None else 0,
    )
    return EventStream(
        store=svc.store, hub=svc.hub, domain=domain, first=first,
        client=request.state.client_ip, options=svc.stream_options,
        metrics=svc.stream_metrics, headers=rate.headers(),
        revoked=lambda: svc.access.stream_revoked(token, domain),
    )
