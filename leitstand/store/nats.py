"""The nats backend: stateless ingest nodes publish every event to a NATS JetStream stream.

Each accepted event becomes one message on subject `<stream>.<domain>` whose payload is the
stored line (the same bytes the embedded store would append). Domains are normalised FQDNs, so
their dots simply become further subject tokens and `<stream>.>` captures all of them; the sink
(`leitstand/sink.py`) maps a subject back to its domain by cutting the prefix.

A request is answered 2xx only after JetStream acknowledged every one of its events. With an
`Idempotency-Key`, event `i` is published with `Nats-Msg-Id: <domain>:<i>:<key>`, so JetStream's
duplicate window drops a retry, whichever ingest node it reaches; the first event also carries the
request's fingerprint, which tells a replay (same body: the normal answer) from a conflict (422).
Only keyed publishes are repeated after a lost acknowledgement; a keyless request whose
acknowledgement did not come in time gets a 503 and may still have been (partly) stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import anyio.to_thread
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from nats.js.errors import (
    APIError,
    NoStreamResponseError,
    NotFoundError,
    TooManyStalledMsgsError,
)

from ..config import Settings
from ..errors import IdempotencyConflict, PayloadTooLarge, Unavailable
from ..metrics import Metrics
from .base import AppendResult, Batch, DomainInfo, Idempotency
from .reader import DomainStats, read_batch

log = logging.getLogger("leitstand.store.nats")

FINGERPRINT_HEADER = "Leitstand-Fingerprint"
COUNT_HEADER = "Leitstand-Count"
MSG_ID_HEADER = "Nats-Msg-Id"
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 0.5
# Errors after which a message may or may not have reached the stream.
_AMBIGUOUS = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    asyncio.TimeoutError,
)


class BackendUnavailable(Unavailable):
    reason = "backend_unavailable"


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


class NatsStore:
    """Publish events to JetStream; connects lazily on first use (or `/health`)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._stream = settings.nats_stream
        self._timeout = settings.nats_timeout
        self._client: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._stream_ready = False
        self._stream_lock: asyncio.Lock | None = None
        self._dir_fd: int | None = None
        self._stats: DomainStats | None = None

    # -- public --------------------------------------------------------------------------------
    async def append(
        self, domain: str, lines: list[bytes], idempotency: Idempotency | None = None
    ) -> AppendResult:
        """Publish `lines` as one message each; return once JetStream acknowledged all of them."""
        deadline = _now() + self._timeout
        js = await self._jetstream(deadline)
        subject = subject_for(self._stream, domain)
        if idempotency is None:
            await self._publish(js, subject, lines, [None] * len(lines), deadline)
            self._metrics.stored(domain, len(lines), sum(map(len, lines)))
            return AppendResult(len(lines))
        first_headers = {
            **_msg_id(domain, 0, idempotency.key),
            FINGERPRINT_HEADER: idempotency.fingerprint,
            COUNT_HEADER: str(len(lines)),
        }
        first = (await self._publish(js, subject, lines[:1], [first_headers], deadline))[0]
        accepted = len(lines)
        if first.duplicate:
            accepted = await self._check_replay(js, first.seq, idempotency, accepted, deadline)
        acks = await self._publish(
            js, subject, lines[1:],
            [_msg_id(domain, i, idempotency.key) for i in range(1, len(lines))], deadline,
        )
        if first.duplicate:
            self._metrics.duplicates.inc()
            return AppendResult(accepted, replayed=True)
        new = [line for line, ack in zip(lines[1:], acks, strict=True) if not ack.duplicate]
        new.append(lines[0])
        self._metrics.stored(domain, len(new), sum(map(len, new)))
        return AppendResult(accepted)

    # The read side serves the sink's files: LEITSTAND_DATA_DIR must be the sink's directory
    # (same host or a shared volume); events show up there once the sink has written them.
    async def domains(self) -> list[DomainInfo]:
        stats = self._reader()[1]
        return await anyio.to_thread.run_sync(stats.snapshot)

    async def read(
        self, domain: str, *, cursor: str | None = None, limit: int = 100, tail: int | None = None
    ) -> Batch:
        dir_fd = self._reader()[0]
        return await anyio.to_thread.run_sync(
            lambda: read_batch(dir_fd, domain, cursor=cursor, limit=limit, tail=tail)
        )

    async def health(self) -> dict[str, Any]:
        """`ok` when connected and the stream answers, with the parts for `/health`."""
        state: dict[str, Any] = {"backend": "nats", "connected": False, "stream": False}
        deadline = _now() + min(self._timeout, 2.0)
        try:
            js = await self._jetstream(deadline)
            state["connected"] = bool(self._client and self._client.is_connected)
            info = await asyncio.wait_for(js.stream_info(self._stream), max(0.1, deadline - _now()))
            state["stream"] = True
            state["messages"] = info.state.messages
        except (Unavailable, APIError, asyncio.TimeoutError, nats.errors.Error) as exc:
            state["error"] = str(getattr(exc, "detail", None) or type(exc).__name__)
        state["ok"] = state["connected"] and state["stream"]
        return state

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        self._connecting = None
        if self._client is not None:
            try:
                await self._client.close()
            except Exception:  # closing a broken connection must not fail shutdown
                log.exception("closing the NATS connection failed")
        self._client = self._js = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = self._stats = None

    def _reader(self) -> tuple[int, DomainStats]:
        if self._dir_fd is None or self._stats is None:
            self._settings.data_dir.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(
                self._settings.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            )
            self._stats = DomainStats(self._dir_fd)
        return self._dir_fd, self._stats

    # -- connection ----------------------------------------------------------------------------
    async def _jetstream(self, deadline: float) -> JetStreamContext:
        if self._js is None:
            if self._connecting is None or self._connecting.done():
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            try:
                await asyncio.wait_for(asyncio.shield(self._connecting), _left(deadline))
            except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
                raise self._unavailable(f"cannot connect to NATS ({type(exc).__name__})") from exc
            assert self._js is not None
        if not self._stream_ready:
            await self._ensure_stream(self._js, deadline)
        return self._js

    async def _connect(self) -> None:
        client = await connect(self._settings, name="leitstand-ingest")
        self._client = client
        self._js = client.jetstream(timeout=self._timeout)

    async def _ensure_stream(self, js: JetStreamContext, deadline: float) -> None:
        if self._stream_lock is None:
            self._stream_lock = asyncio.Lock()
        try:
            async with self._stream_lock:
                if not self._stream_ready:
                    await asyncio.wait_for(ensure_stream(js, self._settings), _left(deadline))
                    self._stream_ready = True
        except (asyncio.TimeoutError, APIError, nats.errors.Error) as exc:
            raise self._unavailable(
                f"JetStream stream {self._stream} not reachable ({type(exc).__name__}: {exc})"
            ) from exc

    # -- publishing ----------------------------------------------------------------------------
    async def _publish(
        self,
        js: JetStreamContext,
        subject: str,
        lines: list[bytes],
        headers: list[dict[str, str] | None],
        deadline: float,
    ) -> list[api.PubAck]:
        """Publish one message per line and wait for all acks. A message with an id is repeated
        after a lost ack (JetStream drops the copy); one without only when it surely did not
        reach the stream. All messages go out at once over one shared reply subscription."""
        acks: list[api.PubAck | None] = [None] * len(lines)
        todo = list(range(len(lines)))
        delay = _BACKOFF_FIRST
        while todo:
            left = deadline - _now()
            if left <= 0:
                raise self._unavailable("NATS JetStream did not acknowledge in time")
            if self._client is None or not self._client.is_connected:
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            sent: dict[int, asyncio.Future[api.PubAck]] = {}

            async def send_all(todo: list[int] = todo, sent: dict[int, Any] = sent) -> None:
                for i in todo:
                    sent[i] = await js.publish_async(
                        subject, lines[i], headers=dict(headers[i]) if headers[i] else None
                    )

            try:
                # One bound for the whole loop (publish_async waits while too many are in
                # flight); a timeout per message would cost a task each.
                await asyncio.wait_for(send_all(), left)
            except nats.errors.MaxPayloadError as exc:
                _cancel(sent.values())
                raise PayloadTooLarge("event larger than the NATS server's max_payload") from exc
            except (TooManyStalledMsgsError, *_AMBIGUOUS) as exc:
                log.debug("publishing to %s stopped: %s", subject, exc)  # the rest was not sent
            if sent:
                # Keyed messages get several tries within the deadline (a leader may just have
                # died); a lost ack of a keyless one ends the request.
                attempt = max(1.0, self._timeout / 3)
                await asyncio.wait(sent.values(), timeout=min(max(0.001, deadline - _now()),
                                                              attempt))
            retry = [i for i in todo if i not in sent]
            for i, future in sent.items():
                outcome = _outcome(future)
                if isinstance(outcome, api.PubAck):
                    acks[i] = outcome
                    continue
                # A refusal (no stream leader listening during an election, an API error) stored
                # nothing; anything else (no ack in time) may have stored the message.
                if not isinstance(outcome, (NoStreamResponseError, APIError)) and not (
                    headers[i] and MSG_ID_HEADER in headers[i]  # type: ignore[operator]
                ):
                    _cancel(sent.values())
                    raise self._unavailable(
                        f"NATS JetStream did not acknowledge in time ({type(outcome).__name__})"
                    )
                retry.append(i)
            todo = sorted(retry)
            if todo:
                await asyncio.sleep(min(delay, max(0.0, deadline - _now())))
                delay = min(delay * 2, _BACKOFF_MAX)
        return [ack for ack in acks if ack is not None]

    async def _check_replay(
        self, js: JetStreamContext, seq: int, idempotency: Idempotency, accepted: int,
        deadline: float,
    ) -> int:
        """The first event was a duplicate: same body (→ its event count) or a conflict."""
        try:
            original = await asyncio.wait_for(
                js.get_msg(self._stream, seq), _left(deadline)
            )
        except NotFoundError:
            return accepted  # aged out of the stream; its id is still remembered
        except (asyncio.TimeoutError, APIError, nats.errors.Error) as exc:
            raise self._unavailable("cannot read back the original of a repeated request") from exc
        headers = original.headers or {}
        if headers.get(FINGERPRINT_HEADER) != idempotency.fingerprint:
            raise IdempotencyConflict("Idempotency-Key was already used with a different body")
        try:
            return int(headers.get(COUNT_HEADER, accepted))
        except ValueError:
            return accepted

    def _unavailable(self, detail: str) -> BackendUnavailable:
        retry = str(max(1, min(int(self._timeout), 30)))
        return BackendUnavailable(detail, headers={"Retry-After": retry})


def _outcome(future: asyncio.Future[api.PubAck]) -> api.PubAck | BaseException:
    """The ack, or what went wrong; an unfinished future is cancelled (frees its slot)."""
    if not future.done():
        future.cancel()
        return asyncio.TimeoutError()
    if future.cancelled():
        return asyncio.TimeoutError()
    return future.exception() or future.result()


def _cancel(futures: Any) -> None:
    for future in futures:
        if not future.done():
            future.cancel()


def _msg_id(domain: str, index: int, key: str) -> dict[str, str]:
    return {MSG_ID_HEADER: f"{domain}:{index}:{key}"}


def _now() -> float:
    return asyncio.get_running_loop().time()


def _left(deadline: float) -> float:
    return max(0.001, deadline - _now())
