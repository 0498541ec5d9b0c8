"""The service container: everything the routes share, built once per app by `create_app`,
and `service(request)`, the typed dependency that hands it to a route."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from ..access import Access
from ..config import Settings
from ..metrics import Metrics
from ..schemas import Schemas
from ..store import Store
from .hub import Hub
from .ratelimit import RateLimiter
from .rejections import Rejections
from .sse import StreamMetrics, StreamOptions


@dataclass
class Service:
    """What the routes and the error boundary need; one per app (tests build many apps)."""

    settings: Settings
    store: Store
    limiter: RateLimiter  # ingest routes, per client IP
    read_limiter: RateLimiter  # read routes, per client IP
    metrics: Metrics
    access: Access  # the tokens in force and what each may do (leitstand/access)
    rejections: Rejections
    stream_options: StreamOptions
    stream_metrics: StreamMetrics
    hub: Hub = field(default_factory=Hub)  # wakes stream clients after an ack (hub.py)
    schemas: Schemas | None = None  # LEITSTAND_SCHEMA_DIR; None: events are not checked


def service(request: Request) -> Service:
    """The app's `Service` (set by `create_app` as `app.state.service`)."""
    svc: Service = request.app.state.service
    return svc


async def _service_dependency(request: Request) -> Service:
    # A coroutine, so that FastAPI runs it on the event loop, not in a worker thread.
    return service(request)


# For FastAPI routes: `svc: ServiceDep` in the signature.
ServiceDep = Annotated[Service, Depends(_service_dependency)]
