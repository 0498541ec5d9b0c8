"""The one error boundary: every error of every route becomes `{"detail": "<reason>"}` with its
status, is counted by reason (`leitstand_rejections_total`) and recorded for
`GET /v1/rejections`. The headers a route promised on every answer (rate limit, deprecation)
go on its errors too.

Starlette's exception middlewares call these handlers for the FastAPI app's routes; the lean
ingest front (front.py) calls `error_response`, which picks the same handler."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import LeitstandError
from .service import service

log = logging.getLogger("leitstand")

_HTTP_REASONS = {404: "not_found", 405: "method_not_allowed"}


def install_error_boundary(app: FastAPI) -> None:
    """Register the app's exception handlers (Starlette's ExceptionMiddleware and
    ServerErrorMiddleware call them, for FastAPI and plain routes alike)."""
    app.add_exception_handler(LeitstandError, leitstand_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)


def answer(request: Request, status: int, detail: Any, reason: str,
           headers: dict[str, str] | None = None,
           extra: dict[str, Any] | None = None) -> JSONResponse:
    """The error answer: `{"detail": ...}` plus the error's `extra` fields (a schema
    rejection's `errors`), counted and recorded."""
    svc = service(request)
    svc.metrics.rejections.labels(reason).inc()
    svc.access.rejected(request, reason)  # by token name too, once the token was known
    svc.rejections.record(request, status, str(detail), (extra or {}).get("errors", ()))
    rate = getattr(request.state, "rate", None)  # set by the guard (auth.py)
    merged = {**getattr(request.state, "route_headers", {}),
              **(rate.headers() if rate is not None else {}), **(headers or {})}
    return JSONResponse({"detail": detail, **(extra or {})}, status_code=status,
                        headers=merged)


async def leitstand_error(request: Request, exc: LeitstandError) -> JSONResponse:
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.detail)
    return answer(request, exc.status, exc.detail, exc.reason, exc.headers, exc.extra)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    reason = _HTTP_REASONS.get(exc.status_code, "http")
    return answer(request, exc.status_code, exc.detail, reason, dict(exc.headers or {}))


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return answer(request, 422, f"invalid {where}: {first.get('msg', 'invalid')}",
                  "invalid_parameter")


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # This answer is sent from outside the access-log middleware, which would add the id.
    request_id = getattr(request.state, "request_id", None)
    return answer(request, 500, "internal error", "internal",
                  {"X-Request-ID": request_id} if request_id else None)


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The answer to `exc`, by the handler `install_error_boundary` registers for it (the lean
    ingest front raises `LeitstandError`s, or something unexpected)."""
    if isinstance(exc, LeitstandError):
        return await leitstand_error(request, exc)
    return await unexpected(request, exc)
