"""The embedded store: one JSONL file per domain, appended with group commit.

Protocol for every writer, in this process, other workers, or outside tools: take
`flock(LOCK_EX)` on the data file itself, append whole `\\n`-terminated lines, release. This store
additionally fsyncs before it answers, cuts a torn trailing line (left by a crash) into a
quarantine file, and never follows a symlink.

Per domain, one `DomainWriter` collects the requests that arrive while a commit is running and
writes them with one `write()` and one `fdatasync()` — the next group commit. Lock waits are
polled from the event loop (no thread parked), file I/O runs in a thread pool, so a slow or locked
domain never holds up another one.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread

from ..domains import data_file_name, file_stem
from ..errors import IdempotencyConflict, LeitstandError, LockTimeout
from ..metrics import Metrics
from .base import AppendResult, Batch, DomainInfo, Idempotency
from .files import (
    FILE_MODE,
    cut_partial_tail,
    open_append,
    same_file,
    storage_error,
    write_all,
)
from .idempotency import IdempotencyLog, Record
from .reader import DomainStats, read_batch

log = logging.getLogger("leitstand.store")

HELPER_DIR = ".leitstand"
_POLL_FIRST, _POLL_MAX = 0.001, 0.025


@dataclass(frozen=True, slots=True)
class StoreOptions:
    lock_timeout: float = 30.0
    fsync: bool = True
    idempotency_window: float = 86_400.0
    idempotency_max_keys: int = 100_000
    io_threads: int = 16


@dataclass(slots=True)
class _Request:
    lines: list[bytes]
    idempotency: Idempotency | None
    arrived: float
    future: asyncio.Future[AppendResult]
    payload: bytes = b""


@dataclass(slots=True)
class _Group:
    requests: list[_Request]
    results: list[AppendResult | LeitstandError] = field(default_factory=list)


class JsonlStore:
    """Store events as JSON lines in `<data_dir>/<domain>.jsonl`."""

    def __init__(self, data_dir: Path, metrics: Metrics, options: StoreOptions) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        helper = Path(data_dir, HELPER_DIR)
        helper.mkdir(exist_ok=True)
        self._helper_fd = os.open(helper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.data_dir = data_dir
        self._metrics = metrics
        self._options = options
        self._writers: dict[str, DomainWriter] = {}
        self._pool = ThreadPoolExecutor(options.io_threads, thread_name_prefix="leitstand-io")
        self._stats = DomainStats(self._dir_fd)

    def writer(self, domain: str) -> DomainWriter:
        writer = self._writers.get(domain)
        if writer is None:
            writer = DomainWriter(
                domain, self._dir_fd, self._helper_fd, self._pool, self._metrics, self._options
            )
            self._writers[domain] = writer
        return writer

    async def append(
        self, domain: str, lines: list[bytes], idempotency: Idempotency | None = None
    ) -> AppendResult:
        return await self.writer(domain).append(lines, idempotency)

    # Reads (see reader.py) never take the flock and run in anyio's worker threads, apart
    # from the writers' pool, so a slow reader never delays a commit.
    async def domains(self) -> list[DomainInfo]:
        return await anyio.to_thread.run_sync(self._stats.snapshot)

    async def read(
        self, domain: str, *, cursor: str | None = None, limit: int = 100, tail: int | None = None
    ) -> Batch:
        return await anyio.to_thread.run_sync(
            lambda: read_batch(self._dir_fd, domain, cursor=cursor, limit=limit, tail=tail)
        )

    async def close(self) -> None:
        for writer in self._writers.values():
            await writer.close()
        self._writers.clear()
        self._pool.shutdown(wait=True)
        os.close(self._helper_fd)
        os.close(self._dir_fd)


class DomainWriter:
    """Appends to one domain's file; concurrent callers share one write and fsync per group."""

    def __init__(
        self,
        domain: str,
        dir_fd: int,
        helper_fd: int,
        pool: ThreadPoolExecutor,
        metrics: Metrics,
        options: StoreOptions,
    ) -> None:
        self.domain = domain
        self.name = data_file_name(domain)
        self._stem = file_stem(domain)
        self._dir_fd = dir_fd
        self._helper_fd = helper_fd
        self._pool = pool
        self._metrics = metrics
        self._options = options
        self._fd: int | None = None
        self._created = False
        self._pending: list[_Request] = []
        self._running: asyncio.Task[None] | None = None
        # key → (fingerprint, future) of requests of this process not yet answered
        self._in_flight: dict[str, tuple[str, asyncio.Future[AppendResult]]] = {}
        self._idempotency = IdempotencyLog(
            self._stem + ".idem",
            helper_fd,
            window=options.idempotency_window,
            max_keys=options.idempotency_max_keys,
        )

    # -- public --------------------------------------------------------------------------------
    async def append(
        self, lines: list[bytes], idempotency: Idempotency | None = None
    ) -> AppendResult:
        """Store `lines` as one batch; return once durable. Same key in flight → wait for it."""
        if idempotency is not None:
            while (earlier := self._in_flight.get(idempotency.key)) is not None:
                if earlier[0] != idempotency.fingerprint:
                    raise _conflict()
                try:
                    result = await asyncio.shield(earlier[1])
                except LeitstandError:
                    continue  # the first attempt failed (and left _in_flight): try for itself
                self._metrics.duplicates.inc()
                return AppendResult(result.accepted, replayed=True)
        loop = asyncio.get_running_loop()
        request = _Request(lines, idempotency, time.monotonic(), loop.create_future())
        if idempotency is not None:
            self._in_flight[idempotency.key] = (idempotency.fingerprint, request.future)
        self._pending.append(request)
        if self._running is None or self._running.done():
            self._running = loop.create_task(self._drain())
        return await asyncio.shield(request.future)

    async def close(self) -> None:
        if self._running is not None:
            await self._running
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close_files)

    # -- commit loop ---------------------------------------------------------------------------
    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            group = _Group(self._pending)
            self._pending = []
            self._metrics.group_size.observe(len(group.requests))
            try:
                if self._fd is None:
                    await loop.run_in_executor(self._pool, self._open)
                await self._lock(group)
                try:
                    await loop.run_in_executor(self._pool, self._commit, group)
                finally:
                    self._unlock()
            except LeitstandError as exc:
                group.results = [exc] * len(group.requests)
            except Exception as exc:  # never leave a caller hanging
                log.exception("commit for %s failed", self.domain)
                error = LeitstandError(f"internal error while storing: {type(exc).__name__}")
                group.results = [error] * len(group.requests)
            self._finish(group)

    def _finish(self, group: _Group) -> None:
        now = time.monotonic()
        for request, result in zip(group.requests, group.results, strict=True):
            if request.idempotency is not None:
                self._in_flight.pop(request.idempotency.key, None)
            if request.future.done():
                continue
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                self._metrics.append_seconds.observe(now - request.arrived)
                request.future.set_result(result)

    async def _lock(self, group: _Group) -> None:
        assert self._fd is not None
        started = time.monotonic()
        deadline = min(r.arrived for r in group.requests) + self._options.lock_timeout
        delay = _POLL_FIRST
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._metrics.lock_wait_seconds.observe(time.monotonic() - started)
                    raise LockTimeout(
                        "lock timeout", headers={"Retry-After": _retry_after(self._options)}
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
        self._metrics.lock_wait_seconds.observe(time.monotonic() - started)

    def _unlock(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- blocking parts, run in the pool -------------------------------------------------------
    def _open(self) -> None:
        self._fd, self._created = open_append(self.name, self._dir_fd)

    def _close_files(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._idempotency.close()

    def _commit(self, group: _Group) -> None:
        """Write the group under the lock. Fills `group.results`, one per request."""
        assert self._fd is not None
        fsync = self._options.fsync
        try:
            if not same_file(self._fd, self.name, self._dir_fd):
                self._reopen_locked()
            size = self._repair(os.fstat(self._fd).st_size)
            results, to_write, intents = self._plan(group, size)
            if intents:
                self._idempotency.record_intents(intents, fsync=fsync)
            if to_write:
                self._write(b"".join(r.payload for r in to_write), size, fsync)
        except OSError as exc:
            raise storage_error(exc, f"cannot store events for {self.domain}") from exc
        for request in to_write:
            self._metrics.stored(self.domain, len(request.lines), len(request.payload))
        for _key, record in intents:
            record.verified = True
        if intents:
            try:
                self._idempotency.compact_if_large(self._fd, size, fsync=fsync)
            except OSError:
                log.exception("compacting the idempotency log of %s failed", self.domain)
        group.results = results

    def _plan(
        self, group: _Group, size: int
    ) -> tuple[list[AppendResult | LeitstandError], list[_Request], list[tuple[str, Record]]]:
        """Decide per request: replay, conflict, or write at which offset."""
        assert self._fd is not None
        results: list[AppendResult | LeitstandError] = []
        to_write: list[_Request] = []
        intents: list[tuple[str, Record]] = []
        if any(r.idempotency for r in group.requests):
            self._idempotency.catch_up()
        offset = size
        now = time.time()
        for request in group.requests:
            key = request.idempotency
            if key is not None:
                record = self._idempotency.lookup(key.key, self._fd, size)
                if record is not None:
                    if record.fingerprint != key.fingerprint:
                        results.append(_conflict())
                    else:
                        self._metrics.duplicates.inc()
                        results.append(AppendResult(record.accepted, replayed=True))
                    continue
            request.payload = b"".join(request.lines)
            if key is not None:
                digest = hashlib.sha256(request.payload).hexdigest()
                intents.append((key.key, Record(
                    key.fingerprint, offset, len(request.payload), digest, len(request.lines), now
                )))
            offset += len(request.payload)
            to_write.append(request)
            results.append(AppendResult(len(request.lines)))
        return results, to_write, intents

    def _write(self, payload: bytes, size: int, fsync: bool) -> None:
        assert self._fd is not None
        try:
            write_all(self._fd, payload)
            if fsync:
                started = time.monotonic()
                os.fdatasync(self._fd)
                self._metrics.fsync_seconds.observe(time.monotonic() - started)
                if self._created:
                    os.fsync(self._dir_fd)
        except OSError:
            # Nothing of a failed batch may stay behind, and after a failed fsync the page
            # cache cannot be trusted: cut back, and start over with a fresh descriptor.
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                log.exception("cannot truncate %s back to %d bytes", self.name, size)
            raise
        self._created = False

    def _reopen_locked(self) -> None:
        """The file was rotated or removed under us: lock the file the name points to now."""
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        fd, created = open_append(self.name, self._dir_fd)
        deadline = time.monotonic() + self._options.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout("lock timeout") from None
                time.sleep(_POLL_MAX)
        self._fd, self._created = fd, created

    def _repair(self, size: int) -> int:
        """Cut a torn trailing line (a writer died mid-line) into the quarantine file."""
        assert self._fd is not None
        new_size, tail = cut_partial_tail(self._fd, size)
        if tail:
            quarantine = self._stem + ".quarantine"
            fd = os.open(
                quarantine,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                FILE_MODE,
                dir_fd=self._helper_fd,
            )
            try:
                write_all(fd, tail + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fdatasync(self._fd)
            self._metrics.repairs.inc()
            log.warning(
                "repaired %s: cut a torn trailing line of %d bytes into %s/%s",
                self.name, len(tail), HELPER_DIR, quarantine,
            )
        return new_size


def _conflict() -> IdempotencyConflict:
    return IdempotencyConflict("Idempotency-Key was already used with a different body")


def _retry_after(options: StoreOptions) -> str:
    return str(max(1, min(int(options.lock_timeout), 30)))
