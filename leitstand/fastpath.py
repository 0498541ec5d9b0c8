"""The two ingest routes, served without FastAPI's per-request machinery.

Profiling the ingest path under load (bench/notes.md) showed FastAPI's router, dependency
solving and its exception and exit-stack middlewares costing more CPU per request than
leitstand's own work. The ingest endpoints take only the request and one string (`?domain=` or
the path's `{domain}`), which FastAPI's validation cannot reject. So this pure ASGI middleware
calls the very same endpoint functions from api.py directly and renders their errors with the
app's own exception handlers (the one error boundary). Every other request — other routes,
other methods, a trailing slash — goes through FastAPI unchanged, and the routes stay declared
there for OpenAPI.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .api import router

_V1 = "/v1/ingest"
_LEGACY_PREFIX = "/ingest/"
_QUERY_CACHE = 256


class IngestFastPath:
    """ASGI middleware: `POST /v1/ingest` and `POST /ingest/{domain}` straight to their
    endpoints; everything else to `app`."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self._fastapi = fastapi_app
        routes = {r.path: r for r in router.routes if isinstance(r, APIRoute)}
        self._v1 = routes[_V1]
        self._legacy = routes[_LEGACY_PREFIX + "{domain}"]
        self._domains: dict[bytes, str | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path = scope["path"]
            if path == _V1:
                await self._serve(scope, receive, send, self._v1, None)
                return
            if path.startswith(_LEGACY_PREFIX):
                domain = path[len(_LEGACY_PREFIX):]
                if domain and "/" not in domain:
                    await self._serve(scope, receive, send, self._legacy, domain)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, route: APIRoute,
                     path_domain: str | None) -> None:
        # What FastAPI's routing would have put into the scope (the access log reads the
        # route, the rejection record the path parameters).
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {} if path_domain is None else {"domain": path_domain}
        request = Request(scope, receive, send)
        domain = path_domain if path_domain is not None else self._query_domain(request)
        try:
            response = await route.endpoint(request, domain)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # the outer ServerErrorMiddleware answers 500 through the app's handler
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _query_domain(self, request: Request) -> str | None:
        """`?domain=` as FastAPI reads it (the last one wins), remembered per raw query string:
        producers send the same one again and again, and parsing it is ~5% of a request."""
        raw = request.scope["query_string"]
        try:
            return self._domains[raw]
        except KeyError:
            pass
        domain = request.query_params.get("domain")
        if len(self._domains) >= _QUERY_CACHE:
            self._domains.clear()
        self._domains[raw] = domain
        return domain

    def _handler_for(self, exc: Exception) -> Any:
        """The app's handler for `exc`, looked up like Starlette's ExceptionMiddleware does
        (by class, most specific first; the catch-all `Exception` handler is the outer one's)."""
        handlers = self._fastapi.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None
