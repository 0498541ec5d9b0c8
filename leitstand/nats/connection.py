"""What the ingest nodes and the sink share about NATS: the connection, the stream, and the
mapping between a domain and its subject `<stream>.<domain>`."""

from __future__ import annotations

import logging
import time
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from ..config import Settings

log = logging.getLogger("leitstand.store.nats")


class QuietLog:
    """A problem that repeats on every retry (a server down) is logged once per `every`
    seconds, with the number of repeats in between."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self._logger = logger
        self._every = every
        self._last = -every
        self._repeats = 0

    def warning(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            self._repeats += 1
            return
        if self._repeats:
            message += f" ({self._repeats} more such messages since the last one)"
        self._logger.warning("%s", message)
        self._last, self._repeats = now, 0


def subject_for(stream: str, domain: str) -> str:
    """The subject events of `domain` (already normalised) are published on."""
    return f"{stream}.{domain}"


def domain_of(stream: str, subject: str) -> str | None:
    """The domain a subject of `stream` belongs to, or None if it is not one of ours."""
    prefix = stream + "."
    return subject[len(prefix):] if subject.startswith(prefix) else None


def stream_config(settings: Settings) -> api.StreamConfig:
    """The stream leitstand creates when it does not exist yet (an existing one is used as is)."""
    max_age = settings.nats_max_age or None
    window = settings.idempotency_window
    if max_age is not None:
        window = min(window, max_age)
    return api.StreamConfig(
        name=settings.nats_stream,
        subjects=[f"{settings.nats_stream}.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        num_replicas=settings.nats_replicas,
        max_age=max_age,
        duplicate_window=window,
        allow_direct=True,
    )


async def connect(settings: Settings, name: str) -> NatsClient:
    """Connect to one of `settings.nats_url`. Retries for ever (bound it from outside); once
    connected, the client reconnects by itself after losing its server."""

    quiet = QuietLog(log)

    async def on_error(exc: Exception) -> None:
        quiet.warning(f"nats: {exc or type(exc).__name__}")

    client: list[NatsClient] = []

    async def on_disconnected() -> None:
        if not (client and client[0].is_closed):  # not when we close it ourselves
            log.warning("nats: disconnected, reconnecting")

    async def on_reconnected() -> None:
        log.info("nats: reconnected")

    options: dict[str, Any] = {
        "servers": list(settings.nats_url),
        "name": name,
        "connect_timeout": max(1, min(int(settings.nats_timeout), 5)),
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
        "ping_interval": 5,
        "max_outstanding_pings": 2,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
    }
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
    if settings.nats_password is not None:
        options["password"] = settings.nats_password.get_secret_value()
    client.append(await nats.connect(**options))
    return client[0]


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the stream unless it exists. Racing creators with the same config all succeed."""
    try:
        await js.stream_info(settings.nats_stream)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(stream_config(settings))
        log.info("created JetStream stream %s (replicas=%d)",
                 settings.nats_stream, settings.nats_replicas)
    except APIError as exc:
        if exc.err_code != 10058:  # "stream name already in use": someone else was first
            raise


