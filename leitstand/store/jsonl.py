"""The embedded store: one JSONL file per domain, appended with group commit.

Protocol for every writer, in this process, other workers, or outside tools: take
`flock(LOCK_EX)` on the data file itself, append whole `\\n`-terminated lines, release. This store
additionally logs each group in an intent log before writing it (see `intents.py`), fsyncs
before it answers, cuts a group or line torn by a crash into a quarantine file, and never follows
a symlink.

Per domain, one `DomainWriter` collects the requests that arrive while a commit is running or
the lock is awaited, and writes them with one `write()` and one `fdatasync()` — the next group
commit. A contended lock is waited for in a thread of its own (`lockwait.py`: never the event
loop, never the I/O pool), file I/O runs in a thread pool, so a slow or locked domain never holds
up another one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..domains import DATA_SUFFIX, file_stem
from ..errors import IdempotencyConflict, LeitstandError, LockTimeout
from ..metrics import Metrics
from .base import AppendResult, Batch, DomainInfo, Health, Idempotency
from .datafile import FileMoved, open_data_dir, open_helper_dir
from .domainfile import DomainFile, Outcome, StoreOptions
from .legacy import migrate_legacy_names
from .lockwait import FileLock
from .maintenance import Maintenance, maintenance_needed
from .reader import FileReader
from .space import SpaceGuard

log = logging.getLogger("leitstand.store")

__all__ = ["DomainWriter", "JsonlStore", "StoreOptions"]


@dataclass(slots=True)
class _Request:
    lines: list[bytes]
    idempotency: Idempotency | None
    arrived: float
    future: asyncio.Future[AppendResult]


class JsonlStore:
    """Store events as JSON lines in `<data_dir>/<domain>.jsonl`."""

    def __init__(self, data_dir: Path, metrics: Metrics, options: StoreOptions) -> None:
        self._dir_fd = open_data_dir(data_dir)
        self._helper_fd = open_helper_dir(self._dir_fd)
        self.data_dir = data_dir
        self._metrics = metrics
        self._options = options
        self._writers: dict[str, DomainWriter] = {}
        self.space = SpaceGuard(self._dir_fd, options.min_free_bytes, metrics)
        metrics.free_bytes.set_function(self.space.free_or_nan)
        self._pool = ThreadPoolExecutor(options.io_threads, thread_name_prefix="leitstand-io")
        migrate_legacy_names(self._dir_fd, self._helper_fd, metrics, fsync=options.fsync,
                             lock_timeout=options.lock_timeout)
        self._recover_all()
        self._reader = FileReader(self._dir_fd)
        self._maintenance: Maintenance | None = None
        if maintenance_needed(options):
            self._maintenance = Maintenance(self._dir_fd, self._helper_fd, metrics, options,
                                            interval=options.upkeep_interval)
            self._maintenance.start()

    def writer(self, domain: str) -> DomainWriter:
        writer = self._writers.pop(domain, None)
        if writer is None:
            self._close_idle_writers(self._options.max_open_domains - 1)
            file = DomainFile(file_stem(domain), self._dir_fd, self._helper_fd, self._metrics,
                              self._options, label=domain, space=self.space)
            if file.rotation is not None and self._maintenance is not None:
                file.rotation.after_rotate = self._maintenance.wake
            writer = DomainWriter(file, self._pool, self._metrics, self._options)
        self._writers[domain] = writer  # the most recently used last
        return writer

    def _close_idle_writers(self, keep: int) -> None:
        """Bound open files and remembered keys: close the least recently used idle writers
        (their files and intent logs are opened and read again when next needed)."""
        for domain, writer in list(self._writers.items()):
            if len(self._writers) <= keep:
                return
            if writer.idle():
                del self._writers[domain]
                writer.close_now()

    async def append(
        self, domain: str, lines: list[bytes], idempotency: Idempotency | None = None
    ) -> AppendResult:
        return await self.writer(domain).append(lines, idempotency)

    async def domains(self) -> list[DomainInfo]:
        return await self._reader.domains()

    async def read(
        self, domain: str, *, cursor: str | None = None, limit: int = 100, tail: int | None = None
    ) -> Batch:
        return await self._reader.read(domain, cursor=cursor, limit=limit, tail=tail)

    async def health(self) -> Health:
        return Health(ok=True)  # the files are local: whatever fails, fails per request

    async def close(self) -> None:
        if self._maintenance is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._maintenance.stop)
        for writer in self._writers.values():
            await writer.close()
        self._writers.clear()
        self._pool.shutdown(wait=True)
        self._reader.close()
        os.close(self._helper_fd)
        os.close(self._dir_fd)

    def _recover_all(self) -> None:
        """Start clean: repair every data file a crash left torn (those locked by someone else
        right now are repaired by their next append)."""
        with os.scandir(self._dir_fd) as entries:
            names = [e.name for e in entries
                     if e.name.endswith(DATA_SUFFIX) and e.is_file(follow_symlinks=False)]
        for name in names:
            file = DomainFile(name[: -len(DATA_SUFFIX)], self._dir_fd, self._helper_fd,
                              self._metrics, self._options)
            try:
                file.open(create=False)
                if file.try_lock():
                    file.recover(tail_only=True)
                else:
                    log.info("%s is locked by another process; it is checked at its next append",
                             name)
            except (LeitstandError, OSError) as exc:
                log.warning("cannot check %s at start: %s", name, exc)
            finally:
                file.close_all()


class DomainWriter:
    """Appends to one domain's file; concurrent callers share one write and fsync per group."""

    def __init__(self, file: DomainFile, pool: ThreadPoolExecutor, metrics: Metrics,
                 options: StoreOptions) -> None:
        self._file = file
        self._pool = pool
        self._metrics = metrics
        self._options = options
        self._pending: list[_Request] = []
        self._running: asyncio.Task[None] | None = None
        self._lock = FileLock(file, pool, metrics, options.lock_timeout)
        # A rotation by another writer is followed by waiting for the new file's lock in
        # `_lock`, never by polling for it in the I/O pool (see `_drain`).
        file.wait_when_moved = False
        # key → (fingerprint, future) of requests of this process not yet answered
        self._in_flight: dict[str, tuple[str, asyncio.Future[AppendResult]]] = {}

    # -- public --------------------------------------------------------------------------------
    async def append(
        self, lines: list[bytes], idempotency: Idempotency | None = None
    ) -> AppendResult:
        """Store `lines` as one batch; return once durable. Same key in flight → wait for it."""
        if idempotency is not None:
            while (earlier := self._in_flight.get(idempotency.key)) is not None:
                if earlier[0] != idempotency.fingerprint:
                    raise IdempotencyConflict(
                        "Idempotency-Key was already used with a different body"
                    )
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

    def idle(self) -> bool:
        """Nothing queued, running, waiting for the lock, or in flight."""
        return (not self._pending and not self._in_flight and not self._lock.waiting
                and (self._running is None or self._running.done()))

    def close_now(self) -> None:
        """Close the files of an idle writer (fast: no fsync, nothing pending)."""
        assert self.idle()
        self._file.close_all()

    async def close(self) -> None:
        if self._running is not None:
            await self._running
        await asyncio.get_running_loop().run_in_executor(self._pool, self._file.close_all)

    # -- commit loop ---------------------------------------------------------------------------
    async def _drain(self) -> None:
        """Commit the pending requests group by group. A group is formed once the lock is ours,
        so every request that arrived while the lock was awaited (another worker committing)
        joins it instead of queueing for a lock handoff and an fsync of its own."""
        loop = asyncio.get_running_loop()
        while self._pending:
            deadline = min(r.arrived for r in self._pending) + self._options.lock_timeout
            try:
                if self._file.fd is None:
                    await loop.run_in_executor(self._pool, self._file.open)
                await self._lock.acquire(deadline)
            except LockTimeout as exc:
                self._expire(exc, max(time.monotonic(), deadline))
                continue
            except Exception as exc:
                pending, self._pending = self._pending, []
                self._finish(pending, [self._as_error(exc)] * len(pending))
                continue
            group, self._pending = self._pending, []
            outcomes: list[Outcome] | None
            try:
                outcomes = await loop.run_in_executor(
                    self._pool, self._file.commit, [(r.lines, r.idempotency) for r in group],
                )
            except FileMoved:
                outcomes = None
            except Exception as exc:
                outcomes = [self._as_error(exc)] * len(group)
            finally:
                self._file.unlock()
            if outcomes is None:
                # Another writer rotated the file and has the new one: wait for its lock,
                # nothing was written. The group goes first again (the oldest first).
                self._pending[:0] = group
                continue
            self._metrics.group_size.observe(len(group))
            self._finish(group, outcomes)

    def _as_error(self, exc: Exception) -> LeitstandError:
        if isinstance(exc, LeitstandError):
            return exc
        log.error("commit for %s failed", self._file.name, exc_info=exc)
        # never leave a caller hanging
        return LeitstandError(f"internal error while storing: {type(exc).__name__}")

    def _expire(self, exc: LockTimeout, now: float) -> None:
        """Answer the requests that waited `lock_timeout` for the lock; the others go on
        waiting (their own deadlines are later)."""
        expired: list[_Request] = []
        waiting: list[_Request] = []
        for request in self._pending:
            late = request.arrived + self._options.lock_timeout <= now
            (expired if late else waiting).append(request)
        self._pending = waiting
        self._finish(expired, [exc] * len(expired))

    def _finish(self, group: list[_Request], outcomes: list[Outcome]) -> None:
        now = time.monotonic()
        for request, outcome in zip(group, outcomes, strict=True):
            if request.idempotency is not None:
                self._in_flight.pop(request.idempotency.key, None)
            if request.future.done():
                continue
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                self._metrics.append_seconds.observe(now - request.arrived)
                request.future.set_result(outcome)
