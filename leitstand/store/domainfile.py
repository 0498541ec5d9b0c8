"""One domain's data file with its intent log: the blocking half of the JSONL store.

Everything here runs in a worker thread while the caller holds `flock(LOCK_EX)` on the data file
(except `open` and `try_lock`). `recover` makes the file clean (a group or line torn by a crash is
cut into the quarantine file), `commit` appends a group of requests as one `write()` and one
`fdatasync()`, or nothing at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from dataclasses import dataclass

from ..errors import IdempotencyConflict, LeitstandError, LockTimeout
from ..metrics import Metrics
from .base import AppendResult, Idempotency
from .files import (
    FILE_MODE,
    cut_partial_tail,
    identity,
    names,
    open_append,
    storage_error,
    write_all,
)
from .intents import Group, Intent, IntentLog

log = logging.getLogger("leitstand.store")

HELPER_DIR = ".leitstand"
DATA_SUFFIX = ".jsonl"
_RELOCK_POLL = 0.025


@dataclass(frozen=True, slots=True)
class StoreOptions:
    lock_timeout: float = 30.0
    fsync: bool = True
    idempotency_window: float = 86_400.0
    idempotency_max_keys: int = 100_000
    io_threads: int = 16
    # Domains whose files stay open (2 descriptors each); idle ones beyond are closed.
    max_open_domains: int = 128


Outcome = AppendResult | LeitstandError


class DomainFile:
    """The data file `<stem>.jsonl` and its helper files in `.leitstand/`."""

    def __init__(self, stem: str, dir_fd: int, helper_fd: int, metrics: Metrics,
                 options: StoreOptions, *, label: str | None = None) -> None:
        self.stem = stem
        self.label = label or stem  # the domain, for metrics
        self.name = stem + DATA_SUFFIX
        self._dir_fd = dir_fd
        self._helper_fd = helper_fd
        self._metrics = metrics
        self._options = options
        self.fd: int | None = None
        self._ident = (0, 0)  # (device, inode) of `fd`
        # Whether this process has fsynced the directory since it opened the file. Whoever
        # created the file, its name must be durable before this process acknowledges a line.
        self._dir_synced = False
        self.intents = IntentLog(stem + ".idem", helper_fd, window=options.idempotency_window,
                                 max_keys=options.idempotency_max_keys)

    # -- open / lock ---------------------------------------------------------------------------
    def open(self, *, create: bool = True) -> None:
        self.fd, _ = open_append(self.name, self._dir_fd, create=create)
        self._ident = identity(self.fd)
        self._dir_synced = False

    def try_lock(self) -> bool:
        assert self.fd is not None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the data file (which releases a lock held through it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close_all(self) -> None:
        self.close()
        self.intents.close()

    # -- recovery (lock held) ------------------------------------------------------------------
    def recover(self, *, tail_only: bool = False) -> int:
        """Make the file end at a clean line boundary; return its size."""
        assert self.fd is not None
        if not names(self.name, self._dir_fd, self._ident):
            self._reopen_locked()
        fsync = self._options.fsync
        size = os.fstat(self.fd).st_size
        dead = self.intents.catch_up(tail_only=tail_only)
        if dead is not None:
            size = self._resolve_dead_group(dead, size, fsync)
        new_size, tail = cut_partial_tail(self.fd, size)
        if tail:
            self._quarantine(tail, f"cut a torn trailing line of {len(tail)} bytes")
            size = new_size
        return size

    def _resolve_dead_group(self, group: Group, size: int, fsync: bool) -> int:
        """A writer died between logging `group` and resolving it: all of it stays, or none."""
        assert self.fd is not None
        own = self._ident[1] == group.ino
        if own and group.start < size < group.end:
            torn = os.pread(self.fd, size - group.start, group.start)
            os.ftruncate(self.fd, group.start)
            self._quarantine(
                torn, f"cut {size - group.start} bytes of a group a crashed writer left torn"
            )
            size = group.start
        committed = own and size >= group.end and all(
            _holds(self.fd, i.start, i.length, i.digest) for i in group.intents
        )
        self.intents.resolve(group, committed=committed, fsync=fsync)
        log.info("%s: a group a crashed writer left open (bytes %d-%d) was %s", self.name,
                 group.start, group.end, "complete: kept" if committed else "void")
        return size

    def _quarantine(self, data: bytes, what: str) -> None:
        """Keep cut-off bytes in `.leitstand/<stem>.quarantine`, durably, then cut."""
        assert self.fd is not None
        name = self.stem + ".quarantine"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                         dir_fd=self._helper_fd)
            created = False
        except FileNotFoundError:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW, FILE_MODE, dir_fd=self._helper_fd)
            created = True
        fsync = self._options.fsync
        try:
            write_all(fd, data if data.endswith(b"\n") else data + b"\n")
            if fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        if fsync:
            if created:
                os.fsync(self._helper_fd)
            os.fdatasync(self.fd)
        self._metrics.repairs.inc()
        log.warning("repaired %s: %s; kept in %s/%s", self.name, what, HELPER_DIR, name)

    def _reopen_locked(self) -> None:
        """The file was rotated or removed under us: lock the file the name points to now."""
        assert self.fd is not None
        self.close()
        self.open()
        deadline = time.monotonic() + self._options.lock_timeout
        while not self.try_lock():
            if time.monotonic() >= deadline:
                self.close()
                raise LockTimeout("lock timeout")
            time.sleep(_RELOCK_POLL)

    # -- appending (lock held) -----------------------------------------------------------------
    def commit(self, requests: list[tuple[list[bytes], Idempotency | None]]) -> list[Outcome]:
        """Append the requests' lines as one group; one outcome per request. Raises a
        `LeitstandError` (and leaves the file as it was) if the group cannot be stored."""
        assert self.fd is not None
        fsync = self._options.fsync
        try:
            size = self.recover()
            outcomes: list[Outcome] = []
            payloads: list[bytes] = []
            events = 0
            group = Group(self._ident[1], size, size, time.time())
            for lines, key in requests:
                if key is not None:
                    record = self.intents.lookup(key.key)
                    if record is not None:
                        outcomes.append(self._replay(record.fingerprint, record.accepted, key))
                        continue
                payload = b"".join(lines)
                if key is not None:
                    group.intents.append(Intent(
                        key.key, key.fingerprint, group.end, len(payload),
                        hashlib.sha256(payload).hexdigest(), len(lines)))
                group.end += len(payload)
                payloads.append(payload)
                events += len(lines)
                outcomes.append(AppendResult(len(lines)))
            if payloads:
                self.intents.begin(group, fsync=fsync)
                self._write(b"".join(payloads), group, fsync)
        except OSError as exc:
            raise storage_error(exc, f"cannot store events in {self.name}") from exc
        if payloads:
            self._metrics.stored(self.label, events, group.end - group.start)
            self._settle(group, fsync)
        return outcomes

    def _replay(self, fingerprint: str, accepted: int, key: Idempotency) -> Outcome:
        if fingerprint != key.fingerprint:
            return IdempotencyConflict("Idempotency-Key was already used with a different body")
        self._metrics.duplicates.inc()
        return AppendResult(accepted, replayed=True)

    def _write(self, payload: bytes, group: Group, fsync: bool) -> None:
        assert self.fd is not None
        try:
            write_all(self.fd, payload)
            if fsync:
                started = time.monotonic()
                os.fdatasync(self.fd)
                self._metrics.fsync_seconds.observe(time.monotonic() - started)
                if not self._dir_synced:
                    os.fsync(self._dir_fd)
        except OSError:
            self._undo(group, fsync)
            raise
        self._dir_synced = self._dir_synced or fsync

    def _undo(self, group: Group, fsync: bool) -> None:
        """Nothing of a failed group may stay behind: cut back and void it. A failed fsync is
        never retried; after one the page cache cannot be trusted, so the file is reopened
        (closing it releases the lock; the caller's unlock is then a no-op)."""
        assert self.fd is not None
        try:
            os.ftruncate(self.fd, group.start)
            if fsync:
                os.fdatasync(self.fd)
        except OSError:
            # The group's bytes may still be there; the next lock holder resolves it by size.
            log.exception("cannot cut %s back to %d bytes", self.name, group.start)
            self.close()
            return
        try:
            self.intents.resolve(group, committed=False, fsync=False)
        except OSError:
            log.exception("cannot void a failed group in the intent log of %s", self.name)
        self.close()

    def _settle(self, group: Group, fsync: bool) -> None:
        """The group is durable: resolve it in the log and compact the log now and then.
        Failures here lose nothing (the next lock holder resolves the group by size)."""
        try:
            self.intents.resolve(group, committed=True, fsync=False)
            self.intents.compact_if_large(fsync=fsync)
        except OSError:
            log.exception("cannot update the intent log of %s", self.name)


def _holds(fd: int, start: int, length: int, digest: str) -> bool:
    return hashlib.sha256(os.pread(fd, length, start)).hexdigest() == digest
