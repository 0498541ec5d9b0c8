"""The file protocol of the data directory, followed by everything in leitstand that writes a
domain's data file: the embedded store (`domainfile.py`) and the NATS sink.

- The data directory is opened once; every name in it is opened relative to that descriptor and
  never through a symlink (`O_NOFOLLOW`). Helper files live in `.leitstand/`, created mode 0700
  and made durable at once; a `.leitstand` that is a symlink or not a directory is refused.
- A writer takes `flock(LOCK_EX)` on the data file itself (the documented protocol for outside
  tools too). Holding it, it checks that the name still points at the file it locked; after a
  rotation it locks the file that is there now.
- Bytes a crash left torn are kept in `.leitstand/<stem>.quarantine` before they are cut off, so
  a repair never destroys anything.
- `fsync` (`LEITSTAND_FSYNC`): when on, appended bytes are `fdatasync`ed, the directory of a file
  this process has not synced yet is fsynced before the first append returns, and a quarantine
  (and its new name) is durable before the cut. When off, none of these calls is made.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path

from ..domains import DATA_SUFFIX
from ..errors import LockTimeout
from ..metrics import Metrics
from .birth import created_or_changed
from .files import (
    FILE_MODE,
    identity,
    names,
    open_append,
    whole_lines_end,
    write_all,
)

log = logging.getLogger("leitstand.store")

HELPER_DIR = ".leitstand"
_LOCK_POLL = 0.025


def open_data_dir(data_dir: Path) -> int:
    """Open (creating if needed, durably) the data directory."""
    if not data_dir.is_dir():
        data_dir.mkdir(parents=True, exist_ok=True)
        _fsync_dir(data_dir.resolve().parent)
    return os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_helper_dir(dir_fd: int, name: str = HELPER_DIR) -> int:
    """Open `.leitstand/` inside the data dir (or the directory `name` inside `dir_fd`),
    creating it durably, never through a symlink."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        os.fsync(dir_fd)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RuntimeError(
                f"{name} in the data dir is not a directory (a symlink?); refusing to use it"
            ) from exc
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileMoved(Exception):
    """The data file was rotated away and another writer holds the lock of the file now under
    its name. The descriptor is that new file, not locked: wait for its lock, then try again
    (nothing was written)."""


class DataFile:
    """The data file `<stem>.jsonl` of one domain, and its quarantine file in `.leitstand/`."""

    def __init__(self, stem: str, dir_fd: int, helper_fd: int, metrics: Metrics, *,
                 fsync: bool, lock_timeout: float, label: str | None = None) -> None:
        self.stem = stem
        self.label = label or stem  # the domain, for metrics
        self.name = stem + DATA_SUFFIX
        self.fsync = fsync
        self.lock_timeout = lock_timeout
        self._dir_fd = dir_fd
        self._helper_fd = helper_fd
        self._metrics = metrics
        self.fd: int | None = None
        # False: `follow_rotation` raises `FileMoved` rather than polling for the new file's
        # lock. The store's writer waits for locks in a thread of its own the kernel wakes
        # (`jsonl.py`); a poll loses every race against a busy writer in another process.
        self.wait_when_moved = True
        self._ident = (0, 0)  # (device, inode) of `fd`
        # Whether this process has fsynced the directory since it opened the file. Whoever
        # created the file, its name must be durable before this process acknowledges a line.
        self._dir_synced = False

    @property
    def dir_fd(self) -> int:
        return self._dir_fd

    @property
    def helper_fd(self) -> int:
        return self._helper_fd

    @property
    def inode(self) -> int:
        return self._ident[1]

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

    def lock(self) -> None:
        """Wait up to `lock_timeout` for the lock (from a thread that may block), else
        `LockTimeout`."""
        deadline = time.monotonic() + self.lock_timeout
        while not self.try_lock():
            if time.monotonic() >= deadline:
                raise LockTimeout("lock timeout")
            time.sleep(_LOCK_POLL)

    def unlock(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the data file (which releases a lock held through it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def is_current(self) -> bool:
        """Whether the name still points at the file open here (not rotated away)."""
        return names(self.name, self._dir_fd, self._ident)

    def reopen(self) -> None:
        """Open the file the name points to now (created if missing), letting go of the old."""
        self.close()
        self.open()

    def follow_rotation(self) -> None:
        """(Lock held.) If the file was rotated or removed under us, lock the file the name
        points to now. The new file is opened and tried before the old one's lock is let go,
        so a writer that waited for the old lock finds the new file taken, not free to race
        for. If another writer has the new file: with `wait_when_moved`, wait for it here
        (polling; for the CLI and the NATS sink), else raise `FileMoved`."""
        # Checked again after every lock: the file opened may be rotated away while we wait.
        while not self.is_current():
            old = self.fd
            self.open()
            locked = self.try_lock()
            if old is not None:
                os.close(old)
            if locked:
                continue
            if not self.wait_when_moved:
                raise FileMoved(self.name)
            try:
                self.lock()
            except LockTimeout:
                self.close()
                raise

    def size(self) -> int:
        assert self.fd is not None
        return os.fstat(self.fd).st_size

    def first_line_at(self, size: int, now: float) -> float:
        """When the file's first line was written, for its record (`segments.py`) when none is
        noted yet: `now` for an empty file about to get it. A file whose first line no rotating
        writer saw (from before an upgrade, from a time without rotation, or begun by an outside
        tool) gets its creation time, else its last change: what `/v1/domains` showed for it."""
        assert self.fd is not None
        return now if size == 0 else created_or_changed(self.fd)

    # -- writing (lock held) -------------------------------------------------------------------
    def append(self, payload: bytes) -> None:
        """Append `payload` (durably with `fsync`). On an OSError the file may hold part of it:
        the caller cuts it back."""
        assert self.fd is not None
        write_all(self.fd, payload)
        if self.fsync:
            started = time.monotonic()
            os.fdatasync(self.fd)
            self._metrics.fsync_seconds.observe(time.monotonic() - started)
            if not self._dir_synced:
                os.fsync(self._dir_fd)
                self._dir_synced = True

    # -- repair (lock held) --------------------------------------------------------------------
    def cut_torn_tail(self, size: int) -> int:
        """A writer died mid-line: cut its torn last line (into quarantine). Returns the size."""
        assert self.fd is not None
        keep = whole_lines_end(self.fd, size)
        if keep == size:
            return size
        return self.cut(keep, size, f"cut a torn trailing line of {size - keep} bytes")

    def cut(self, start: int, size: int, what: str) -> int:
        """Move the bytes `[start, size)` into the quarantine file and cut the file to `start`.
        Returns `start`."""
        assert self.fd is not None
        self._quarantine(os.pread(self.fd, size - start, start))
        os.ftruncate(self.fd, start)
        if self.fsync:
            os.fdatasync(self.fd)
        self._metrics.repairs.inc()
        log.warning("repaired %s: %s; kept in %s/%s.quarantine", self.name, what, HELPER_DIR,
                    self.stem)
        return start

    def _quarantine(self, data: bytes) -> None:
        name = self.stem + ".quarantine"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                         dir_fd=self._helper_fd)
            created = False
        except FileNotFoundError:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW, FILE_MODE, dir_fd=self._helper_fd)
            created = True
        try:
            write_all(fd, data if data.endswith(b"\n") else data + b"\n")
            if self.fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        if self.fsync and created:
            os.fsync(self._helper_fd)
