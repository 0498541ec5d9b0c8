"""`create_app(settings)`: the whole service, built from settings passed in."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from . import __version__
from .accesslog import AccessLog, SafeFormatter
from .api import Service, router
from .config import Settings
from .errors import LeitstandError
from .events import StreamMetrics, StreamOptions, close_streams_on_exit_signals
from .fastpath import IngestFastPath
from .headertimeout import STATE_KEY as HEADER_TIMEOUT_KEY
from .metrics import Metrics
from .ratelimit import RateLimiter
from .read_api import ReadSide
from .read_api import router as read_router
from .rejections import Rejections
from .schemas import open_schemas
from .schemas.routes import router as schema_router
from .store import open_store

log = logging.getLogger("leitstand")

_SWITCH_INTERVAL = 0.0005

DESCRIPTION = """\
Append structured JSON events, one line per event, to a JSONL file per domain.
A 2xx answer means the events are on disk (fsynced) exactly once.
Every request that reads or writes events needs the shared secret in `X-Auth`."""


def create_app(settings: Settings) -> FastAPI:
    """Build a fresh app: its own store, rate limiter and metrics registry."""
    configure_logging(settings.log_level)
    # A group commit hands the GIL between the event loop and a store I/O thread at every
    # syscall; with the default 5 ms switch interval each handoff can wait 5 ms while the loop
    # is busy. 0.5 ms: about 1.6-2x the durable single-event throughput (bench/notes.md).
    sys.setswitchinterval(_SWITCH_INTERVAL)
    metrics = Metrics()
    schemas = open_schemas(settings.schema_dir, metrics)  # a broken file: refuses to start
    store = open_store(settings, metrics)
    svc = Service(
        settings=settings,
        store=store,
        limiter=RateLimiter(settings.rate_limit, settings.trusted_proxies),
        metrics=metrics,
        tokens=settings.token_bytes(),
        schemas=schemas,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, float]]:
        log.info("leitstand %s storing in %s (fsync=%s)", __version__,
                 settings.data_dir.resolve(), settings.fsync)
        close_streams_on_exit_signals(svc.hub)  # else open streams stall a graceful shutdown
        if schemas is not None:
            schemas.reload_on_sighup()
        # The lifespan state reaches uvicorn's connections: leitstand.headertimeout reads it.
        yield {HEADER_TIMEOUT_KEY: settings.header_timeout}
        await store.close()

    app = FastAPI(
        title="leitstand",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # leitstand's metrics are Prometheus (/metrics). FastAPI's native OpenTelemetry would
        # look up three global providers on every request (~27 us, bench/notes.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = svc
    app.state.read_side = ReadSide(
        hub=svc.hub,
        rejections=Rejections(settings.rejections_kept),
        stream_options=StreamOptions(send_timeout=settings.stream_send_timeout),
        stream_metrics=StreamMetrics(metrics.registry),
    )
    app.include_router(router)
    app.include_router(read_router)
    app.include_router(schema_router)
    install_error_boundary(app, metrics)
    app.add_middleware(IngestFastPath, fastapi_app=app)  # inside the access log
    app.add_middleware(AccessLog, metrics=metrics)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def install_error_boundary(app: FastAPI, metrics: Metrics) -> None:
    """Translate every error to `{"detail": ...}` with its status, in one place."""

    def answer(request: Request, status: int, detail: Any, reason: str,
               headers: dict[str, str] | None = None,
               extra: dict[str, Any] | None = None) -> JSONResponse:
        metrics.rejections.labels(reason).inc()
        request.app.state.read_side.rejections.record(
            request, status, str(detail), (extra or {}).get("errors", ()))
        merged = {**getattr(request.state, "route_headers", {}),
                  **getattr(request.state, "rate_headers", {}), **(headers or {})}
        return JSONResponse({"detail": detail, **(extra or {})}, status_code=status,
                            headers=merged)

    @app.exception_handler(LeitstandError)
    async def leitstand_error(request: Request, exc: LeitstandError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.detail)
        return answer(request, exc.status, exc.detail, exc.reason, exc.headers, exc.extra)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return answer(request, exc.status_code, exc.detail, reason, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return answer(request, 422, f"invalid {where}: {first.get('msg', 'invalid')}",
                      "invalid_parameter")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # This answer is sent from outside the access-log middleware, which would add the id.
        request_id = getattr(request.state, "request_id", None)
        return answer(request, 500, "internal error", "internal",
                      {"X-Request-ID": request_id} if request_id else None)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document with the X-Auth scheme and the shared schemas."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})["XAuth"] = {
        "type": "apiKey", "in": "header", "name": "X-Auth",
        "description": "The shared secret (LEITSTAND_TOKEN).",
    }
    schemas = components.setdefault("schemas", {})
    schemas["Event"] = {
        "type": "object",
        "description": "Any JSON object. `domain`, if present, must match the request's domain; "
        "it is set to the normalised domain when stored.",
        "properties": {"domain": {"type": "string", "maxLength": 253}},
        "additionalProperties": True,
    }
    schemas["Accepted"] = {
        "type": "object",
        "required": ["status", "accepted", "domain"],
        "properties": {
            "status": {"type": "string", "enum": ["accepted"]},
            "accepted": {"type": "integer", "minimum": 1},
            "domain": {"type": "string"},
        },
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {"description": "Why the request failed."},
            "errors": {"type": "array", "maxItems": 20,
                       "items": {"$ref": "#/components/schemas/SchemaError"},
                       "description": "Only on 422 for events that do not match their domain's "
                       "schema: the first errors, in batch order."},
            "error_count": {"type": "integer", "minimum": 1,
                            "description": "Only with `errors`: all errors of the batch."},
        },
    }
    schemas["SchemaError"] = {
        "type": "object",
        "required": ["index", "path", "message"],
        "properties": {
            "index": {"type": "integer", "minimum": 0,
                      "description": "The event's position in the batch (0-based; NDJSON: "
                      "counting non-blank lines)."},
            "path": {"type": "string", "description": "JSON Pointer into the event (RFC 6901; "
                     "empty: the event as a whole), e.g. `/temperature`."},
            "message": {"type": "string", "description": "The validator's message."},
        },
    }
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            for status, response in list(operation.get("responses", {}).items()):
                if status == "422" and "HTTPValidationError" in str(response):
                    operation["responses"]["422"] = {
                        "description": response.get("description", "Invalid parameter."),
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Error"}}},
                    }
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = doc
    return doc


def configure_logging(level: str) -> None:
    """Log to stderr at `level`, once per process (uvicorn's own loggers are left alone)."""
    logger = logging.getLogger("leitstand")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
