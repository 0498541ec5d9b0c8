"""`create_app(settings)`: the whole HTTP service, built from settings passed in.

Nothing here changes process-wide state (see `leitstand.app.tune_process`), so tests and the
OpenAPI export can build as many apps as they like.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from .. import __version__
from ..access import Access
from ..access.routes import router as access_router
from ..config import Settings
from ..headertimeout import STATE_KEY as HEADER_TIMEOUT_KEY
from ..logs import configure_logging
from ..metrics import Metrics
from ..schemas import open_schemas
from ..schemas.routes import router as schema_router
from ..store import open_store
from . import ingest, ops, read, stream, web
from .accesslog import AccessLog
from .apidoc import openapi_document
from .boundary import install_error_boundary
from .front import IngestFront
from .hub import close_streams_on_exit_signals
from .ratelimit import RateLimiter
from .rejections import Rejections
from .service import Service
from .sse import StreamMetrics, StreamOptions

log = logging.getLogger("leitstand")

DESCRIPTION = """\
Append structured JSON events, one line per event, to a JSONL file per domain.
A 2xx answer means the events are on disk (fsynced) exactly once.
Every request that reads or writes events needs a token in `X-Auth`: LEITSTAND_TOKEN (full
access) or a named token from LEITSTAND_TOKENS_FILE, which may write and read only the domains
its patterns name (else 403)."""


class LeitstandApp(FastAPI):
    """FastAPI with the lean ingest front (front.py) as the outermost layer of its stack:
    the ingest routes are served there, everything else by FastAPI as usual."""

    def build_middleware_stack(self) -> ASGIApp:
        svc: Service = self.state.service
        return IngestFront(super().build_middleware_stack(), ingest.ROUTES, svc)


def create_app(settings: Settings) -> FastAPI:
    """Build a fresh app: its own store, rate limiter and metrics registry."""
    configure_logging(settings.log_level)
    metrics = Metrics()
    schemas = open_schemas(settings.schema_dir, metrics)  # a broken file: refuses to start
    store = open_store(settings, metrics)
    svc = Service(
        settings=settings,
        store=store,
        limiter=RateLimiter(settings.rate_limit, settings.trusted_proxies),
        read_limiter=RateLimiter(settings.read_rate_limit, settings.trusted_proxies),
        metrics=metrics,
        # a broken tokens file: refuses to start (load_settings has said why, naming the line)
        access=Access(settings.token_bytes(), settings.tokens_file, metrics.registry),
        rejections=Rejections(settings.rejections_kept),
        stream_options=StreamOptions(send_timeout=settings.stream_send_timeout),
        stream_metrics=StreamMetrics(metrics.registry),
        schemas=schemas,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, float]]:
        log.info("leitstand %s storing in %s (fsync=%s)", __version__,
                 settings.data_dir.resolve(), settings.fsync)
        close_streams_on_exit_signals(svc.hub)  # else open streams stall a graceful shutdown
        if schemas is not None:
            schemas.reload_on_sighup()
        svc.access.reload_on_sighup()
        # The lifespan state reaches uvicorn's connections: leitstand.headertimeout reads it.
        yield {HEADER_TIMEOUT_KEY: settings.header_timeout}
        await store.close()

    app = LeitstandApp(
        title="leitstand",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # leitstand's metrics are Prometheus (/metrics). FastAPI's native OpenTelemetry would
        # look up three global providers on every request (~27 us, bench/notes.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = svc
    app.router.routes[0:0] = ingest.ROUTES  # first: the router tries routes in order
    for router in (ops.router, read.router, stream.router, access_router, schema_router,
                   web.router):
        app.include_router(router)
    install_error_boundary(app)
    app.add_middleware(AccessLog, metrics=metrics)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app
