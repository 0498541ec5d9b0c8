"""The lean ingest front: the outermost ASGI callable of the app. It serves the ingest routes
(`LeanRoute`s, defined in ingest.py) straight from the raw ASGI scope, receive and send, and
hands every other request to the FastAPI app unchanged.

Why: a single event costs little of leitstand's own work; Starlette's middleware stack, router,
`Request`, `request.state` and `Response` objects cost more (bench/notes.md). So, per ingest
request, the front

  - matches the request with the very routes the FastAPI router holds (`Route.matches`:
    the same path, `root_path` and method rules); a request no lean route fully matches
    (another method, a trailing slash, any other path) goes to the FastAPI app, which answers
    405 with `Allow`, 307 or 404 as for every route;
  - scans the headers once (`IngestCall`), runs the route's handler, and sends its answer
    as two ASGI messages, with the same headers Starlette's `Response` would write;
  - writes the access log line, `X-Request-ID` and `leitstand_requests` as the `AccessLog`
    middleware does (`record_request`, `request_id_from`);
  - answers errors through the app's one error boundary (`boundary.error_response`, with a
    Starlette `Request` built on that rare path only), and re-raises an unexpected error after
    its 500 answer, as Starlette's `ServerErrorMiddleware` does.

The FastAPI router keeps the same routes for the OpenAPI document and for the edges above;
their Starlette endpoint runs the same handler (so the app's answers do not depend on which way
a request took: tests/test_api_front.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import lru_cache
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import LeitstandError
from .accesslog import record_request, request_id_from
from .apidoc import DocumentedRoute
from .boundary import error_response
from .service import Service, service

RawHeaders = list[tuple[bytes, bytes]]
Answer = tuple[int, RawHeaders, bytes]  # status, headers, body

# The request headers an ingest request reads (X-Auth apart: it may be repeated, which is a 401).
_READ = frozenset({b"content-type", b"content-length", b"content-encoding", b"x-forwarded-for",
                   b"idempotency-key", b"x-request-id"})


class IngestCall:
    """One ingest request as the handlers see it: the raw scope, its headers scanned once (the
    first of each, as Starlette's `Headers.get`), the app's `Service`, and `state`, the scope's
    `state` dict (what Starlette's `request.state` reads and writes; the error boundary and the
    access log read it)."""

    __slots__ = ("auth", "headers", "receive", "scope", "state", "svc")

    def __init__(self, scope: Scope, receive: Receive, svc: Service) -> None:
        self.scope = scope
        self.receive = receive
        self.svc = svc
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        self.state: dict[str, Any] = state
        headers: dict[bytes, bytes] = {}
        auth: list[bytes] = []
        for name, value in scope["headers"]:
            if name in _READ:
                if name not in headers:
                    headers[name] = value
            elif name == b"x-auth":
                auth.append(value)
        self.headers = headers
        self.auth = auth  # every X-Auth value: more than one is refused (Access.identify)

    def header(self, name: bytes) -> str | None:
        """A header read by the ingest path (`_READ`), decoded as Starlette does."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def peer(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (as Starlette's `Request.stream`); `ClientDisconnect` if the
        client goes away first."""
        while True:
            message = await self.receive()
            if message["type"] == "http.request":
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()


Handler = Callable[[IngestCall], Awaitable[Answer]]


def answer(status: int, headers: RawHeaders, body: bytes, content_type: bytes) -> Answer:
    """An answer with `Content-Length` and `Content-Type` after the given headers, where
    Starlette's `Response` puts them."""
    headers.append((b"content-length", b"%d" % len(body)))
    headers.append((b"content-type", content_type))
    return status, headers, body


class LeanRoute(DocumentedRoute):
    """A route served by the front (`handler`); in the FastAPI router it documents the
    operation, and its Starlette endpoint runs the same handler."""

    def __init__(self, path: str, handler: Handler, *, method: str,
                 operation: dict[str, Any]) -> None:
        async def endpoint(request: Request) -> Response:
            status, headers, body = await handler(
                IngestCall(request.scope, request.receive, service(request)))
            response = Response(body, status)
            response.raw_headers = headers
            return response

        super().__init__(path, endpoint, method=method, operation=operation)
        self.handler = handler


class IngestFront:
    """ASGI: the lean routes served here, every other request by `app` (module docstring)."""

    def __init__(self, app: ASGIApp, routes: Sequence[LeanRoute], svc: Service) -> None:
        self.app = app
        self.routes = tuple(routes)
        self.svc = svc
        # Producers post to the same few paths again and again: the router's verdict for a path
        # is remembered (Route.matches was ~2% of a single event; bounded: paths are the
        # client's choice).
        self._match = lru_cache(maxsize=256)(self._match_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self._match(scope["path"], scope.get("root_path", ""))
            if found is not None:
                route, child_scope = found
                scope.update(child_scope)  # `route`, `endpoint`: as the router sets them
                scope["path_params"] = dict(child_scope["path_params"])
                await self.serve(route.handler, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _match_path(self, path: str, root_path: str) -> tuple[LeanRoute, Scope] | None:
        """The lean route a POST to `path` fully matches, and its child scope: what the router
        decides (`Route.matches` reads the path, the root path and the method only)."""
        scope = {"type": "http", "method": "POST", "path": path, "root_path": root_path}
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return route, child_scope
        return None

    async def serve(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        call = IngestCall(scope, receive, self.svc)
        request_id = request_id_from(call.headers.get(b"x-request-id"))
        call.state["request_id"] = request_id
        status = 500
        try:
            try:
                status, headers, body = await handler(call)
            except Exception as exc:  # the one boundary answers every error
                status = await self.fail(scope, receive, send, exc, request_id)
                return
            headers.append((b"x-request-id", request_id.encode("ascii")))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            record_request(self.svc.metrics, scope, status, request_id, started)

    async def fail(self, scope: Scope, receive: Receive, send: Send, exc: Exception,
                   request_id: str) -> int:
        """Answer `exc` through the error boundary; returns the status sent. An unexpected
        error is raised again once answered (the server logs it and closes the connection),
        as behind Starlette's `ServerErrorMiddleware`."""
        response = await error_response(Request(scope, receive), exc)
        # The boundary's 500 names the request id itself (it is answered outside the access
        # log middleware in the FastAPI app); every other answer gets it here, as there.
        if not any(name == b"x-request-id" for name, _ in response.raw_headers):
            response.raw_headers.append((b"x-request-id", request_id.encode("ascii")))
        await response(scope, receive, send)
        if not isinstance(exc, LeitstandError):
            raise exc
        return response.status_code
