"""`leitstand sink`: write the JetStream stream into the per-domain JSONL files, exactly once.

The sink is a durable pull consumer (`LEITSTAND_NATS_CONSUMER`) of the stream the ingest nodes
publish to. Each message is one accepted batch: its payload is the batch's lines, each
`\n`-terminated. The sink writes them into `<data-dir>/<domain>.jsonl` exactly as the embedded
store does (`domainsink.py`), and acknowledges a message only after that write is durable.

Skipping by sequence (see `domainsink.py`) is only safe if each domain's messages are written
in stream order without holes. A message lost in transit (the sink's NATS server died
mid-delivery) would leave a hole until JetStream redelivers it, so the sink processes the stream
strictly in sequence order: a missing sequence is fetched directly from the stream (or skipped
if the stream no longer has it), and it starts at the consumer's ack floor, below which
everything is written.

Run one sink per data directory (`.leitstand/sink.lock` enforces it); more sinks need their own
directory and consumer name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from ..config import Settings
from ..domains import normalize_domain
from ..errors import InvalidDomain, LeitstandError
from .connection import QuietLog, connect, domain_of, ensure_stream
from .domainsink import DataDir
from .puller import Puller, consumer_config

log = logging.getLogger("leitstand.sink")


class Sink:
    """Fetch from the durable consumer in stream order, write, fsync, then acknowledge."""

    def __init__(self, settings: Settings, data: DataDir, *, batch: int = 1000) -> None:
        self._settings = settings
        self._data = data
        self._batch = batch
        self._stream = settings.nats_stream
        self._client: NatsClient | None = None
        self._next = 1  # the next stream sequence to apply
        self._floor = 0  # the consumer's ack floor when this process found it
        self._pending: dict[int, tuple[str, bytes, Msg | None]] = {}
        self.applied = 0
        self.skipped = 0  # redeliveries of messages already written
        self._quiet = QuietLog(log)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set. NATS outages are waited out; write errors retried."""
        connecting = asyncio.ensure_future(connect(self._settings, name="leitstand-sink"))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            stopping.cancel()
            return
        self._client = connecting.result()
        try:
            js = self._client.jetstream(timeout=self._settings.nats_timeout)
            puller = await self._subscribe(js, stop)
            if puller is not None:
                log.info("sink: consuming %s as %s into %s, from sequence %d",
                         self._stream, self._settings.nats_consumer, self._data.path, self._next)
                while not stop.is_set():
                    await self._step(js, puller, stop)
                await puller.stop()
        finally:
            stopping.cancel()
            with contextlib.suppress(Exception):
                await self._client.close()

    async def _subscribe(self, js: JetStreamContext, stop: asyncio.Event) -> Puller | None:
        assert self._client is not None
        delay = 0.1
        while not stop.is_set():
            try:
                await ensure_stream(js, self._settings)
                self._next = await self._anchor_consumer(js)
                return await Puller(self._client, self._stream,
                                    self._settings.nats_consumer).start()
            except (APIError, nats.errors.Error, asyncio.TimeoutError) as exc:
                self._quiet.warning(f"sink: stream or consumer not reachable yet ({exc})")
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, 2.0)
        return None

    async def _anchor_consumer(self, js: JetStreamContext) -> int:
        """Make the durable consumer deliver from its ack floor on, now; return where it starts.

        Messages a previous sink received but never acked (it died) would come back only after
        `ack_wait`, while newer ones arrive at once. So a consumer with unacked messages is
        replaced by one that starts at its ack floor. If the sink dies between the delete and
        the create, the next start begins at the stream's first message: slower (everything is
        read once more), but still nothing is written twice."""
        name = self._settings.nats_consumer
        try:
            info = await js.consumer_info(self._stream, name)
        except NotFoundError:
            # New, or deleted by an earlier try of this process (then its floor is known).
            start = self._floor + 1 if self._floor else None
            await js.add_consumer(self._stream, consumer_config(self._settings, start))
            return start or 1
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        # A consumer anchored at sequence S reports floor 0 until its first ack, but everything
        # before S was acknowledged to its predecessor.
        floor = self._floor = max(floor, (info.config.opt_start_seq or 1) - 1)
        if info.num_ack_pending:
            log.info("sink: %d messages were delivered but not acknowledged; redelivering from "
                     "sequence %d", info.num_ack_pending, floor + 1)
            await js.delete_consumer(self._stream, name)
            await js.add_consumer(self._stream, consumer_config(self._settings, floor + 1))
        return floor + 1

    async def _step(self, js: JetStreamContext, puller: Puller, stop: asyncio.Event) -> None:
        try:
            msgs = await puller.fetch(self._batch, timeout=1.0)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            msgs = []
        except (APIError, nats.errors.Error) as exc:
            self._quiet.warning(f"sink: fetch failed ({type(exc).__name__}: {exc})")
            await _sleep_unless(stop, 0.5)
            return
        acks: list[Msg] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq < self._next:
                acks.append(msg)  # written before (a redelivery)
                self.skipped += 1
            else:
                self._pending[seq] = (msg.subject, msg.data, msg)
        run = await self._take_run(js)
        if run:
            await self._write(run, stop)
            acks.extend(m for _, _, _, m in run if m is not None)
        if acks:
            # AckPolicy.ALL: acknowledging the highest one acknowledges every message before it,
            # and everything before `_next` is written (the sink writes in stream order).
            last = max(acks, key=lambda m: m.metadata.sequence.stream)
            with contextlib.suppress(nats.errors.Error):
                await last.ack()

    async def _take_run(self, js: JetStreamContext) -> list[tuple[int, str, bytes, Msg | None]]:
        """Pending messages from `_next` on, without holes: a missing sequence is fetched from
        the stream directly, or skipped if the stream no longer has it."""
        run: list[tuple[int, str, bytes, Msg | None]] = []
        while self._pending:
            item = self._pending.pop(self._next, None)
            if item is None:
                try:
                    item = await self._fetch_direct(js, self._next)
                except (APIError, nats.errors.Error, asyncio.TimeoutError) as exc:
                    log.warning("sink: cannot fill sequence %d yet (%s)", self._next, exc)
                    break
                if item is None:
                    continue  # _fetch_direct moved _next past messages that are gone
            subject, data, msg = item
            domain = _domain(self._stream, subject, data)
            if domain is not None:
                run.append((self._next, domain, data, msg))
            elif msg is not None:
                run.append((self._next, "", b"", msg))  # not ours: ack it, write nothing
            self._next += 1
        return run

    async def _fetch_direct(
        self, js: JetStreamContext, seq: int
    ) -> tuple[str, bytes, Msg | None] | None:
        try:
            raw = await js.get_msg(self._stream, seq)
        except NotFoundError:
            info = await js.stream_info(self._stream)
            first = info.state.first_seq
            if seq < first:
                log.warning("sink: sequences %d..%d left the stream before they were written "
                            "(max age or a purge)", seq, first - 1)
                self._next = first
            else:
                self._next = seq + 1  # deleted from the stream
            return None
        return raw.subject or "", raw.data or b"", None

    async def _write(self, run: list[tuple[int, str, bytes, Msg | None]],
                     stop: asyncio.Event) -> None:
        lines = [(seq, domain, data) for seq, domain, data, _ in run if domain]
        delay = 0.2
        while True:
            try:
                self.applied += await asyncio.to_thread(self._data.apply, lines)
                return
            except LeitstandError as exc:
                # Disk full, lock timeout, I/O error: nothing is acked, so nothing is lost.
                log.error("sink: cannot write (%s); retrying", exc.detail)
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, 10.0)
                if stop.is_set():
                    raise


def _domain(stream: str, subject: str, data: bytes) -> str | None:
    raw = domain_of(stream, subject)
    try:
        domain = normalize_domain(raw) if raw is not None else None
    except InvalidDomain:
        domain = None
    # A batch: one or more non-empty lines, each `\n`-terminated.
    if (domain is None or domain != raw or not data.endswith(b"\n") or data.startswith(b"\n")
            or b"\n\n" in data):
        log.error("sink: skipping a message on %s that is not a leitstand batch", subject)
        return None
    return domain


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
