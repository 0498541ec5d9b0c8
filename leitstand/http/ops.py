"""The open operational routes: `/health`, `/version`, `/metrics` (no auth, no rate limit)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .. import __version__
from .apidoc import RETRY_AFTER
from .service import ServiceDep

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    summary="Liveness, and the storage backend's state",
    response_model=None,
    responses={
        200: {"description": "`{\"status\": \"ok\"}`; with LEITSTAND_BACKEND=nats also "
              "`backend` (`connected`, `stream`); with LEITSTAND_SCHEMA_DIR also `schemas` "
              "(`in_force`: files, `reload_error`: why the newest files were refused, or null); "
              "with LEITSTAND_TOKENS_FILE also `tokens` (`file`, `loaded_at`, and after a "
              "failed reload `error` and `failed_at`: the previous tokens stay in force).",
              "content": {"application/json": {"schema": {"type": "object"}}}},
        503: {"description": "The backend cannot store now (nats: not connected, or the stream "
              "does not answer); ingest answers 503 too.",
              "content": {"application/json": {"schema": {"type": "object"}}},
              "headers": RETRY_AFTER},
    },
)
async def health(svc: ServiceDep) -> Response:
    """`ok`; a backend that can be unreachable (nats) reports its state, and 503 while down."""
    health = await svc.store.health()
    body: dict[str, Any] = {"status": "ok" if health.ok else "unavailable"}
    if health.backend is not None:
        body["backend"] = health.backend
    if svc.schemas is not None:
        # A refused reload does not make the service unhealthy (the previous schemas stay in
        # force), but it is shown here.
        body["schemas"] = svc.schemas.health()
    tokens = svc.access.health()
    if tokens is not None:
        body["tokens"] = tokens
    return JSONResponse(
        body,
        status_code=200 if health.ok else 503,
        headers=None if health.ok else {"Retry-After": "5"},
    )


@router.get("/version", summary="Service version")
async def version() -> dict[str, str]:
    return {"version": __version__, "api": "v1"}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(svc: ServiceDep) -> Response:
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
