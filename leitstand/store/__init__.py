"""Event storage behind one small interface (`Store`); `open_store` picks the backend."""

from __future__ import annotations

from ..config import Settings
from ..metrics import Metrics
from .base import AppendResult, Batch, DomainInfo, Health, Idempotency, Store
from .jsonl import JsonlStore, StoreOptions
from .retention import RetentionPolicy
from .rotation import RotationPolicy


def store_options(settings: Settings) -> StoreOptions:
    """The embedded store's options (also the NATS sink's: it writes the same files)."""
    return StoreOptions(
        lock_timeout=settings.lock_timeout,
        fsync=settings.fsync == "always",
        idempotency_window=settings.idempotency_window,
        idempotency_max_keys=settings.idempotency_max_keys,
        min_free_bytes=settings.min_free_bytes,
        rotation=RotationPolicy(settings.rotate_bytes, settings.rotate_age),
        compress=settings.compress_method(),
        retention=RetentionPolicy(settings.retain_age, settings.retain_bytes),
    )


def open_store(settings: Settings, metrics: Metrics) -> Store:
    """The backend named by `settings.backend`, ready to use."""
    if settings.backend == "jsonl":
        return JsonlStore(settings.data_dir, metrics, store_options(settings))
    if settings.backend == "nats":
        from ..nats.store import NatsStore  # the NATS client is loaded only when it is used

        return NatsStore(settings, metrics)
    raise ValueError(f"unknown backend {settings.backend!r}")


__all__ = [
    "AppendResult", "Batch", "DomainInfo", "Health", "Idempotency", "JsonlStore", "Store",
    "StoreOptions", "open_store", "store_options",
]
