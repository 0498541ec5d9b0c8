"""The durable spool on disk: request bodies the server could not take yet, kept in order.

Layout of a spool directory (several processes may share one):

    queue/<ns>-<pid>-<seq>.batch   one batch each, complete: names sort in the order written
    tmp/                           batches being written (renamed into queue/ when whole)
    rejected/                      batches the server refused when they were sent from here
    bytes                          the size of queue/ (kept under its own lock; recounted by
                                   `recount`, so a crash that skews it heals)
    drain.lock                     held (flock) by the one process draining the queue
    last-error.json                the last failure, for `leitstand spool status`

An entry file is one JSON header line (domain, Idempotency-Key, content type, event count)
and the body. It is written to tmp/, fsynced, renamed into queue/, and queue/ is fsynced: after
a crash an entry is either whole in queue/ or absent. A drain sends an entry, then unlinks it;
a crash in between leaves the entry, and its kept Idempotency-Key makes the resend harmless.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, IngestError

SUFFIX = ".batch"


class SpoolFullError(IngestError):
    """The spool has no room for the batch (`LEITSTAND_SPOOL_MAX_BYTES`): it is neither
    stored nor spooled, and the caller must keep it."""


@dataclass(frozen=True)
class Entry:
    """One spooled batch: what to send again, under the same Idempotency-Key."""

    name: str
    domain: str
    key: str
    content_type: str
    events: int
    body: bytes
    size: int


@dataclass(frozen=True)
class SpoolStatus:
    entries: int
    bytes: int
    oldest: datetime | None
    rejected: int
    last_error: dict[str, Any] | None


class Spool:
    """One spool directory (created if missing), bounded to `max_bytes` of queued entries."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.queue = self.path / "queue"
        self._tmp = self.path / "tmp"
        self.rejected = self.path / "rejected"
        self._names = threading.Lock()
        self._last_ns = 0
        self._seq = 0
        try:
            for folder in (self.path, self.queue, self._tmp, self.rejected):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.path / "bytes").touch(exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"LEITSTAND_SPOOL_DIR {str(self.path)!r} cannot be used: "
                                     f"{exc.strerror or exc}") from None

    # -- writing -------------------------------------------------------------------------------
    def append(self, domain: str, key: str, content_type: str, events: int,
               body: bytes) -> Entry:
        """Keep one batch durably (fsynced) at the end of the queue; raises `SpoolFullError`
        if it does not fit."""
        header = json.dumps({"domain": domain, "key": key, "content_type": content_type,
                             "events": events}, separators=(",", ":")).encode() + b"\n"
        data = header + body
        name = self._next_name()
        with self._size_lock() as size:
            if size.value + len(data) > self.max_bytes:
                raise SpoolFullError(
                    f"the spool {self.path} is full ({size.value} bytes queued, "
                    f"{len(data)} more would exceed LEITSTAND_SPOOL_MAX_BYTES={self.max_bytes}); "
                    f"this batch of {events} events was neither stored nor spooled")
            temporary = self._tmp / name
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temporary, self.queue / name)
            _fsync_dir(self.queue)
            size.value += len(data)
        return Entry(name, domain, key, content_type, events, body, len(data))

    def _next_name(self) -> str:
        with self._names:
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            self._seq += 1
            return f"{self._last_ns:020d}-{os.getpid():010d}-{self._seq:010d}{SUFFIX}"

    # -- reading and removing ------------------------------------------------------------------
    def pending(self) -> bool:
        """Is anything queued (cheap: stops at the first entry)?"""
        with os.scandir(self.queue) as entries:
            return any(entry.name.endswith(SUFFIX) for entry in entries)

    def names(self) -> list[str]:
        """The queued entries, oldest first."""
        return sorted(name for name in os.listdir(self.queue) if name.endswith(SUFFIX))

    def read(self, name: str) -> Entry | None:
        """The entry, or None if another drain took it meanwhile. An entry that cannot be
        parsed raises ValueError (the caller moves it aside)."""
        try:
            data = (self.queue / name).read_bytes()
        except FileNotFoundError:
            return None
        header, _, body = data.partition(b"\n")
        fields = json.loads(header)
        return Entry(name, str(fields["domain"]), str(fields["key"]),
                     str(fields["content_type"]), int(fields["events"]), body, len(data))

    def remove(self, name: str, size: int) -> None:
        """Forget an entry the server has stored."""
        with self._size_lock() as total:
            try:
                os.unlink(self.queue / name)
            except FileNotFoundError:
                return
            total.value = max(0, total.value - size)

    def reject(self, name: str) -> None:
        """Move an entry the server refused to rejected/ (kept for a person to look at)."""
        with self._size_lock() as total:
            size = _size(self.queue / name)
            os.rename(self.queue / name, self.rejected / name)
            _fsync_dir(self.rejected)
            total.value = max(0, total.value - size)

    @contextmanager
    def draining(self, *, wait: bool) -> Iterator[bool]:
        """The drain lock (one drainer per spool across processes): yields whether it was
        taken; without `wait`, gives up at once when another drain holds it."""
        fd = os.open(self.path / "drain.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    # -- bookkeeping ---------------------------------------------------------------------------
    def record_error(self, error: str, entry: str | None = None) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "error": error, "entry": entry}
        temporary = self._tmp / f"last-error-{os.getpid()}-{threading.get_ident()}.json"
        temporary.write_text(json.dumps(record), encoding="utf-8")
        os.replace(temporary, self.path / "last-error.json")

    def last_error(self) -> dict[str, Any] | None:
        try:
            value = json.loads((self.path / "last-error.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def recount(self) -> int:
        """Set the size counter from the queue itself (heals what a crash skewed)."""
        with self._size_lock() as total:
            total.value = self._queued_bytes()
            return total.value

    def _queued_bytes(self) -> int:
        return sum(_size(self.queue / name) for name in self.names())

    def status(self) -> SpoolStatus:
        names = self.names()
        size = self.recount()
        oldest = None
        if names:
            nanoseconds = int(names[0].split("-", 1)[0])
            oldest = datetime.fromtimestamp(nanoseconds / 1e9, timezone.utc)
        rejected = sum(1 for name in os.listdir(self.rejected) if name.endswith(SUFFIX))
        return SpoolStatus(len(names), size, oldest, rejected, self.last_error())

    @contextmanager
    def _size_lock(self) -> Iterator[_Counter]:
        """The queue's byte count, locked against the other processes while in use."""
        with open(self.path / "bytes", "r+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            text = handle.read().strip()
            counter = _Counter(int(text) if text.isdigit() else self._queued_bytes())
            yield counter
            if str(counter.value).encode() != text:
                handle.seek(0)
                handle.truncate()
                handle.write(str(counter.value).encode())


@dataclass
class _Counter:
    value: int


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
