"""The nats backend: stateless ingest nodes publish every batch to a NATS JetStream stream.

A request's batch becomes ONE message on subject `<stream>.<domain>`: its payload is the batch's
stored lines concatenated, each `\n`-terminated (the same bytes the embedded store would
append), with `Leitstand-Count: <events>`. So a batch is all-or-nothing here too: JetStream
stores the message or it does not, and the sink (`leitstand/nats/sink.py`) writes a message's lines
as one unit. Domains are normalised FQDNs, so their dots simply become further subject tokens
and `<stream>.>` captures all of them; the sink maps a subject back to its domain by cutting
the prefix.

A request is answered 2xx only after JetStream acknowledged its message. With an
`Idempotency-Key`, the message carries `Nats-Msg-Id: <domain>:<key>`, so JetStream's duplicate
window drops a retry, whichever ingest node it reaches; it also carries the request's
fingerprint, which tells a replay (same body: the normal answer) from a conflict (422). Only a
keyed publish is repeated after a lost acknowledgement; a keyless request whose acknowledgement
did not come in time gets a 503 and may still have been stored (as a whole).

Size: a message may not exceed the server's `max_payload` (nats-server's default is 1 MB; the
documented cluster config sets 8 MB, enough for a maximal body plus the `domain` field added
to each of `LEITSTAND_MAX_EVENTS` events). A batch that is larger as stored gets 413 and
nothing is published.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

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
from ..errors import BackendUnavailable, IdempotencyConflict, PayloadTooLarge, Unavailable
from ..metrics import Metrics
from ..store.base import AppendResult, Batch, DomainInfo, Health, Idempotency
from ..store.datafile import open_data_dir
from ..store.owner import is_shortened, refuse_if_taken
from ..store.reader import FileReader
from .connection import connect, ensure_stream, subject_for

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
        self._reader: FileReader | None = None

    # -- public --------------------------------------------------------------------------------
    async def append(
        self, domain: str, lines: list[bytes], idempotency: Idempotency | None = None
    ) -> AppendResult:
        """Publish `lines` as one message; return once JetStream acknowledged it."""
        deadline = _now() + self._timeout
        if is_shortened(domain):
            # 409 up front when this node sees the sink's files and another domain owns the
            # name; otherwise the sink keeps the batch aside (leitstand/nats/collisions.py).
            self._files()
            assert self._dir_fd is not None
            await asyncio.to_thread(refuse_if_taken, self._dir_fd, domain)
        js = await self._jetstream(deadline)
        payload = b"".join(lines)
        headers = {COUNT_HEADER: str(len(lines))}
        if idempotency is not None:
            headers[MSG_ID_HEADER] = f"{domain}:{idempotency.key}"
            headers[FINGERPRINT_HEADER] = idempotency.fingerprint
        self._check_size(len(lines), payload, headers)
        ack = await self._publish(js, subject_for(self._stream, domain), payload, headers,
                                  deadline)
        if ack.duplicate and idempotency is not None:
            accepted = await self._check_replay(js, ack.seq, idempotency, len(lines), deadline)
            self._metrics.duplicates.inc()
            return AppendResult(accepted, replayed=True)
        self._metrics.stored(domain, len(lines), len(payload))
        return AppendResult(len(lines))

    def _check_size(self, events: int, payload: bytes, headers: dict[str, str]) -> None:
        """The server refuses (and drops the connection for) a message above its max_payload,
        headers included: refuse such a batch before anything is sent."""
        limit = self._client.max_payload if self._client is not None else 0
        size = len(payload) + _headers_size(headers)
        if limit and size > limit:
            raise PayloadTooLarge(
                f"batch too large for the NATS backend: {events} events are {size} bytes as "
                f"stored, the NATS server's max_payload is {limit} bytes"
            )

    # The read side serves the sink's files: LEITSTAND_DATA_DIR must be the sink's directory
    # (same host or a shared volume); events show up there once the sink has written them.
    async def domains(self) -> list[DomainInfo]:
        return await self._files().domains()

    async def read(
        self, domain: str, *, cursor: str | None = None, limit: int = 100, tail: int | None = None
    ) -> Batch:
        return await self._files().read(domain, cursor=cursor, limit=limit, tail=tail)

    async def health(self) -> Health:
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
        return Health(ok=state["connected"] and state["stream"], backend=state)

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
            self._dir_fd = self._reader = None

    def _files(self) -> FileReader:
        if self._reader is None:
            self._dir_fd = open_data_dir(self._settings.data_dir)
            self._reader = FileReader(self._dir_fd)
        return self._reader

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
        payload: bytes,
        headers: dict[str, str],
        deadline: float,
    ) -> api.PubAck:
        """Publish one message and wait for its ack. A message with an id is repeated after a
        lost ack (JetStream drops the copy); one without only when it surely did not reach the
        stream."""
        keyed = MSG_ID_HEADER in headers
        delay = _BACKOFF_FIRST
        while True:
            left = deadline - _now()
            if left <= 0:
                raise self._unavailable("NATS JetStream did not acknowledge in time")
            if self._client is None or not self._client.is_connected:
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            future: asyncio.Future[api.PubAck] | None = None
            try:
                future = await asyncio.wait_for(
                    js.publish_async(subject, payload, headers=dict(headers)), left
                )
            except nats.errors.MaxPayloadError as exc:
                raise PayloadTooLarge("batch larger than the NATS server's max_payload") from exc
            except (TooManyStalledMsgsError, *_AMBIGUOUS) as exc:
                log.debug("publishing to %s stopped: %s", subject, exc)  # not sent
            if future is not None:
                # A keyed message gets several tries within the deadline (a leader may just
                # have died); a lost ack of a keyless one ends the request.
                attempt = max(1.0, self._timeout / 3)
                await asyncio.wait([future], timeout=min(max(0.001, deadline - _now()), attempt))
                outcome = _outcome(future)
                if isinstance(outcome, api.PubAck):
                    return outcome
                # A refusal (no stream leader listening during an election, an API error)
                # stored nothing; anything else (no ack in time) may have stored the message.
                if not isinstance(outcome, (NoStreamResponseError, APIError)) and not keyed:
                    raise self._unavailable(
                        f"NATS JetStream did not acknowledge in time ({type(outcome).__name__})"
                    )
            await asyncio.sleep(min(delay, max(0.0, deadline - _now())))
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _check_replay(
        self, js: JetStreamContext, seq: int, idempotency: Idempotency, accepted: int,
        deadline: float,
    ) -> int:
        """The message was a duplicate: same body (→ its event count) or a conflict."""
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


def _headers_size(headers: dict[str, str]) -> int:
    """The bytes of the NATS header block (`NATS/1.0\r\n`, `Key: value\r\n` each, `\r\n`)."""
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def _now() -> float:
    return asyncio.get_running_loop().time()


def _left(deadline: float) -> float:
    return max(0.001, deadline - _now())
