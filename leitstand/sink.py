"""`leitstand sink`: write the JetStream stream into the per-domain JSONL files, exactly once.

The sink is a durable pull consumer (`LEITSTAND_NATS_CONSUMER`) of the stream the ingest nodes
publish to. Each message is one accepted batch: its payload is the batch's lines, each
`\n`-terminated. The sink writes them into `<data-dir>/<domain>.jsonl` exactly as the embedded
store does (same names, same bytes, `flock(LOCK_EX)` on the data file, `fdatasync`, a torn tail
cut into `.leitstand/<stem>.quarantine`), and acknowledges a message only after that fsync.
A message is the unit of everything below: its lines go into the file in one write together
with the messages around it, and are applied (or skipped) as a whole, never in part.

Exactly once. Per domain, `.leitstand/<stem>.seq` holds one JSON line per write:
`{"q": last stream sequence written, "s": offset, "n": length, "h": sha256, "i": inode}`. The
line is appended and fsynced *before* the data; it counts only once the data file holds exactly
those bytes there ("landed"). Only the last line can be unlanded: a failed write compacts the log
back to its last landed line. On start (under the data file's lock) the last line decides:

- landed: everything up to `q` is in the file. Killed after the data fsync but before the ack,
  JetStream redelivers those messages; their sequence is <= q, so they are acked, not written.
- not landed, and the file ends at `s`: killed between the record and the data write; the
  previous line's `q` holds, the redelivered messages are written.
- not landed, and the file ends inside `[s, s+n)`: killed (or power lost) mid-write; the torn
  bytes are cut into the quarantine file and the messages are written again when redelivered.
- not landed, and the file is longer or another file (rotated): the bytes cannot be told apart
  from an outside writer's; the sink logs it and writes the messages again (a possible duplicate
  beats a loss). This needs a crash in the window *and* an outside writer or a rotation.

Skipping by sequence is only safe if each domain's messages are written in stream order without
holes. A message lost in transit (the sink's NATS server died mid-delivery) would leave a hole
until JetStream redelivers it, so the sink processes the stream strictly in sequence order: a
missing sequence is fetched directly from the stream (or skipped if the stream no longer has it),
and it starts at the consumer's ack floor, below which everything is written.

Run one sink per data directory (`.leitstand/sink.lock` enforces it); more sinks need their own
directory and consumer name.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError
from pydantic import ValidationError

from .config import Settings, load_settings
from .domains import data_file_name, file_stem, normalize_domain
from .errors import InvalidDomain, LeitstandError, LockTimeout
from .store.files import (
    FILE_MODE,
    OPEN_FLAGS,
    cut_partial_tail,
    open_append,
    same_file,
    storage_error,
    write_all,
)
from .store.nats import QuietLog, connect, domain_of, ensure_stream

log = logging.getLogger("leitstand.sink")

HELPER_DIR = ".leitstand"
LOCK_NAME = "sink.lock"
_LOCK_POLL = 0.025
_COMPACT_LINES = 1024
# A pull request's byte budget: messages are whole batches (up to the server's max_payload,
# at most 64 MB), so the message count alone would not bound the sink's memory. Above the
# largest possible message, so a single one always fits.
_PULL_MAX_BYTES = 80 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Mark:
    """One line of the `.seq` log: a write of the lines of stream sequences up to `seq`."""

    seq: int
    start: int
    length: int
    digest: str
    inode: int

    def to_line(self) -> bytes:
        return orjson.dumps(
            {"q": self.seq, "s": self.start, "n": self.length, "h": self.digest, "i": self.inode},
            option=orjson.OPT_APPEND_NEWLINE,
        )

    @classmethod
    def from_line(cls, raw: bytes) -> Mark | None:
        try:
            item = orjson.loads(raw)
            return cls(int(item["q"]), int(item["s"]), int(item["n"]), str(item["h"]),
                       int(item["i"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class DomainSink:
    """Writes one domain's lines. Blocking: run it in a thread."""

    def __init__(self, domain: str, dir_fd: int, helper_fd: int, *, fsync: bool,
                 lock_timeout: float) -> None:
        self.domain = domain
        self.stem = file_stem(domain)
        self.name = data_file_name(domain)
        self._seq_name = self.stem + ".seq"
        self._dir_fd = dir_fd
        self._helper_fd = helper_fd
        self._fsync = fsync
        self._lock_timeout = lock_timeout
        self._fd: int | None = None
        self._dir_synced = False
        self._seq_fd: int | None = None
        self._seq_lines = 0
        self._recovered = False
        self._needs_compaction = False
        self.last: Mark | None = None  # the last landed write
        self.written = 0

    @property
    def applied(self) -> int:
        """The highest stream sequence of this domain that is in the file."""
        return self.last.seq if self.last else 0

    def apply(self, items: list[tuple[int, bytes]]) -> int:
        """Append the messages of `items` (stream sequence, the message's lines) not yet
        applied, all in one write; durable on return. Returns how many lines were written."""
        if self._fd is None:
            self._fd, _ = open_append(self.name, self._dir_fd)
            self._dir_synced = False
        self._lock()
        try:
            if not same_file(self._fd, self.name, self._dir_fd):
                self._reopen_locked()
            size = os.fstat(self._fd).st_size
            if not self._recovered:
                size = self._recover(size)
                self._recovered = True
            size = self._cut_torn_tail(size)
            new = [line for seq, line in items if seq > self.applied]
            if len(new) < len(items):
                log.info("%s: %d redelivered messages were written before (up to sequence %d); "
                         "not writing them again", self.name, len(items) - len(new), self.applied)
            if not new:
                return 0
            payload = b"".join(new)
            self._write(items[-1][0], payload, size)
            return payload.count(b"\n")
        except OSError as exc:
            raise storage_error(exc, f"cannot store events for {self.domain}") from exc
        finally:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in (self._fd, self._seq_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._seq_fd = None

    # -- writing (lock held) -------------------------------------------------------------------
    def _write(self, seq: int, payload: bytes, size: int) -> None:
        assert self._fd is not None
        ino = os.fstat(self._fd).st_ino
        mark = Mark(seq, size, len(payload), hashlib.sha256(payload).hexdigest(), ino)
        if self._needs_compaction:
            self._compact()
        self._append_mark(mark)
        try:
            write_all(self._fd, payload)
            if self._fsync:
                os.fdatasync(self._fd)
                if not self._dir_synced:
                    os.fsync(self._dir_fd)  # a new file's name must be durable too
                    self._dir_synced = True
        except OSError:
            # The mark is void now; keep "only the last line may be unlanded" true.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            self._needs_compaction = True
            raise
        self.last = mark
        self.written += len(payload)
        if self._seq_lines >= _COMPACT_LINES:
            self._compact()

    def _append_mark(self, mark: Mark) -> None:
        if self._seq_fd is None:
            self._seq_fd = os.open(self._seq_name, OPEN_FLAGS | os.O_CREAT, FILE_MODE,
                                   dir_fd=self._helper_fd)
            if self._fsync:
                os.fsync(self._helper_fd)
        write_all(self._seq_fd, mark.to_line())
        if self._fsync:
            os.fdatasync(self._seq_fd)
        self._seq_lines += 1

    def _compact(self) -> None:
        """Rewrite the log as its last landed line (or empty)."""
        tmp = self._seq_name + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                     FILE_MODE, dir_fd=self._helper_fd)
        try:
            write_all(fd, self.last.to_line() if self.last else b"")
            if self._fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self._seq_name, src_dir_fd=self._helper_fd, dst_dir_fd=self._helper_fd)
        if self._fsync:
            os.fsync(self._helper_fd)
        if self._seq_fd is not None:
            os.close(self._seq_fd)
        self._seq_fd = os.open(self._seq_name, OPEN_FLAGS, dir_fd=self._helper_fd)
        self._seq_lines = 1 if self.last else 0
        self._needs_compaction = False

    # -- recovery (lock held) ------------------------------------------------------------------
    def _recover(self, size: int) -> int:
        """Load the `.seq` log and settle its last line against the data file."""
        assert self._fd is not None
        marks = self._read_marks()
        if not marks:
            return size
        last = marks[-1]
        previous = marks[-2] if len(marks) > 1 else None
        ino = os.fstat(self._fd).st_ino
        if ino == last.inode and _holds(self._fd, size, last):
            self.last = last
            self._seq_lines = len(marks)
            return size
        self.last = previous
        if ino == last.inode and last.start < size <= last.start + last.length:
            torn = os.pread(self._fd, size - last.start, last.start)
            self._quarantine(torn, f"cut {len(torn)} bytes of a write the sink did not finish")
            os.ftruncate(self._fd, last.start)
            os.fdatasync(self._fd)
            size = last.start
        elif ino != last.inode or size != last.start:
            log.error(
                "%s: the sink's last write (stream sequence %d) cannot be verified (the file "
                "was rotated or written by another process meanwhile); writing it again, which "
                "may duplicate up to %d bytes", self.name, last.seq, last.length,
            )
        log.info("%s: the last write before a crash did not land; resuming after sequence %d",
                 self.name, self.applied)
        self._compact()
        return size

    def _read_marks(self) -> list[Mark]:
        try:
            fd = os.open(self._seq_name, OPEN_FLAGS, dir_fd=self._helper_fd)
        except FileNotFoundError:
            return []
        try:
            size, _ = cut_partial_tail(fd, os.fstat(fd).st_size)
            data = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        marks = [Mark.from_line(raw) for raw in data.splitlines()]
        return [m for m in marks if m is not None]

    def _cut_torn_tail(self, size: int) -> int:
        """Another writer died mid-line: keep its torn line in quarantine, as the store does."""
        assert self._fd is not None
        new_size, tail = cut_partial_tail(self._fd, size)
        if tail:
            self._quarantine(tail, f"cut a torn trailing line of {len(tail)} bytes")
            os.fdatasync(self._fd)
        return new_size

    def _quarantine(self, data: bytes, what: str) -> None:
        fd = os.open(self.stem + ".quarantine",
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     FILE_MODE, dir_fd=self._helper_fd)
        try:
            write_all(fd, data if data.endswith(b"\n") else data + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning("%s: %s into %s/%s.quarantine", self.name, what, HELPER_DIR, self.stem)

    # -- locking -------------------------------------------------------------------------------
    def _lock(self) -> None:
        assert self._fd is not None
        _flock_until(self._fd, time.monotonic() + self._lock_timeout)

    def _reopen_locked(self) -> None:
        """The file was rotated away under us: lock the file the name points to now."""
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        fd, _ = open_append(self.name, self._dir_fd)
        try:
            _flock_until(fd, time.monotonic() + self._lock_timeout)
        except LockTimeout:
            os.close(fd)
            raise
        self._fd, self._dir_synced = fd, False


def _flock_until(fd: int, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout("lock timeout") from None
            time.sleep(_LOCK_POLL)


def _holds(fd: int, size: int, mark: Mark) -> bool:
    if mark.start + mark.length > size:
        return False
    return hashlib.sha256(os.pread(fd, mark.length, mark.start)).hexdigest() == mark.digest


class DataDir:
    """The sink's side of a data directory: one `DomainSink` per domain, and the sink lock."""

    def __init__(self, path: Path, *, fsync: bool, lock_timeout: float) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        Path(path, HELPER_DIR).mkdir(exist_ok=True)
        self._helper_fd = os.open(Path(path, HELPER_DIR),
                                  os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._lock_fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE,
                                dir_fd=self._helper_fd)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise SystemExit(f"leitstand sink: another sink is running on {path}") from None
        self._fsync = fsync
        self._lock_timeout = lock_timeout
        self._domains: dict[str, DomainSink] = {}

    def domain(self, domain: str) -> DomainSink:
        sink = self._domains.get(domain)
        if sink is None:
            sink = DomainSink(domain, self._dir_fd, self._helper_fd, fsync=self._fsync,
                              lock_timeout=self._lock_timeout)
            self._domains[domain] = sink
        return sink

    def apply(self, run: list[tuple[int, str, bytes]]) -> int:
        """Write a run of (sequence, domain, lines) in stream order; durable on return.
        Returns how many lines were written."""
        by_domain: dict[str, list[tuple[int, bytes]]] = {}
        for seq, domain, line in run:
            by_domain.setdefault(domain, []).append((seq, line))
        return sum(self.domain(d).apply(items) for d, items in by_domain.items())

    def close(self) -> None:
        for sink in getattr(self, "_domains", {}).values():
            sink.close()
        for fd in (self._lock_fd, self._helper_fd, self._dir_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


# -- the consumer ------------------------------------------------------------------------------
def consumer_config(settings: Settings, start: int | None = None) -> api.ConsumerConfig:
    """The sink's durable consumer; `start`: begin at this stream sequence (else the first)."""
    return api.ConsumerConfig(
        durable_name=settings.nats_consumer,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if start else api.DeliverPolicy.ALL,
        opt_start_seq=start,
        ack_policy=api.AckPolicy.ALL,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=20_000,
        filter_subject=f"{settings.nats_stream}.>",
    )


class Puller:
    """Pull requests to the durable consumer, answered into one callback subscription.

    nats-py's `fetch` spends a task and a timer on every message; this costs about a quarter
    of that. All requests share one inbox, so a message that arrives after its request ended
    is simply part of the next batch (the sink orders by stream sequence anyway)."""

    def __init__(self, client: NatsClient, stream: str, consumer: str) -> None:
        self._client = client
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = client.new_inbox()
        self._msgs: list[Msg] = []
        self._ended = asyncio.Event()
        self._want = 0
        self._sub: Any = None

    async def start(self) -> Puller:
        self._sub = await self._client.subscribe(self._inbox, cb=self._on_message)
        return self

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None and msg.reply:
            self._msgs.append(msg)
        if status not in (None, "100") or len(self._msgs) >= self._want:
            self._ended.set()  # 404 no messages, 408 expired, 409 ...: this request is over

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """What is there now (up to `batch`); if nothing, wait up to `timeout` for the first."""
        for request in ({"batch": batch, "max_bytes": _PULL_MAX_BYTES, "no_wait": True},
                        {"batch": batch, "max_bytes": _PULL_MAX_BYTES,
                         "expires": int(timeout * 1e9)}):
            if not self._msgs:
                self._want = batch if "no_wait" in request else 1
                self._ended.clear()
                await self._client.publish(self._subject, orjson.dumps(request),
                                           reply=self._inbox)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), timeout + 0.5)
            if self._msgs:
                msgs, self._msgs = self._msgs, []
                return msgs
        return []

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()


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


async def serve(settings: Settings) -> None:
    """Run the sink until SIGTERM or SIGINT."""
    data = DataDir(settings.data_dir, fsync=settings.fsync == "always",
                   lock_timeout=settings.lock_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Sink(settings, data).run(stop)
    finally:
        data.close()


def sink_settings() -> Settings:
    """The service's settings; the sink serves no HTTP, so it does without LEITSTAND_TOKEN."""
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        if any(e["loc"] == ("token",) and e["type"] == "missing" for e in exc.errors()):
            return load_settings(token="unused-by-the-sink")
        return load_settings()  # says what else is wrong, and exits


def main() -> None:
    """Entry point of `leitstand sink` and `python -m leitstand.sink`."""
    settings = sink_settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
