"""The read side of the JSONL store: whole lines from a cursor, and cheap per-domain stats.

Readers never hold the writers' flock while they read. To learn how far the active file is
settled they take it shared for the instant of one `fstat` (waiting at most `SETTLE_WAIT` seconds
for a writer's group to finish): bytes below that size belong to groups whose writers have
finished — a group still being written, which a failed write, fsync or crash may yet cut back,
lies beyond it. Of the settled bytes only whole `\\n`-terminated lines are handed out. Pages span
the closed segments and the active file (`pages.py`); cursors are described in `cursors.py`.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from dataclasses import dataclass

import anyio.to_thread
import orjson

from ..domains import DATA_SUFFIX, data_file_name, normalize_domain
from ..errors import InvalidDomain
from .base import Batch, DomainInfo
from .birth import created_or_changed
from .pages import read_batch
from .segments import archive_summary
from .streams import StreamCache

_BLOCK = 65536
_FIRST_LINE_MAX = 65536
# Never follow a symlink; never wait for a writer when the name is a FIFO.
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class FileReader:
    """The read side of a data directory, as every backend serves it. Reads never take the
    writers' flock (see `settled_size`) and run in anyio's worker threads, apart from the
    writers' pool, so a slow reader never delays a commit."""

    def __init__(self, dir_fd: int) -> None:
        self._dir_fd = dir_fd
        self._stats = DomainStats(dir_fd)
        self.streams = StreamCache()

    async def domains(self) -> list[DomainInfo]:
        return await anyio.to_thread.run_sync(self._stats.snapshot)

    def close(self) -> None:
        self.streams.close()

    async def read(self, domain: str, *, cursor: str | None, limit: int,
                   tail: int | None) -> Batch:
        return await anyio.to_thread.run_sync(
            lambda: read_batch(self._dir_fd, domain, cursor=cursor, limit=limit, tail=tail,
                               settle=settled_size, cache=self.streams)
        )


SETTLE_WAIT = 2.0
_SETTLE_POLL = 0.002


def settled_size(fd: int) -> int:
    """The file's size at a moment when no writer holds its flock (or, if a writer holds it
    longer than `SETTLE_WAIT`, the size now: a stuck outside writer must not stall reads)."""
    deadline = time.monotonic() + SETTLE_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return os.fstat(fd).st_size
            time.sleep(_SETTLE_POLL)
            continue
        try:
            return os.fstat(fd).st_size
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


# -- stats ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Scanned:
    inode: int
    domain: str
    offset: int  # just after the last newline counted
    events: int


class DomainStats:
    """Event counts per data file, kept up to date incrementally: a file is read once, then
    only the bytes appended since the last call (a rotated or truncated file is read anew)."""

    def __init__(self, dir_fd: int) -> None:
        self._dir_fd = dir_fd
        self._lock = threading.Lock()
        self._files: dict[str, _Scanned] = {}

    def snapshot(self) -> list[DomainInfo]:
        """Blocking (run it in a thread): stat every data file, count new lines."""
        with self._lock:
            seen: dict[str, _Scanned] = {}
            infos: list[DomainInfo] = []
            with os.scandir(self._dir_fd) as entries:
                names = [e.name for e in entries if e.name.endswith(DATA_SUFFIX)]
            for name in names:
                info = self._update(name, seen)
                if info is not None:
                    infos.append(info)
            self._files = seen
        return sorted(infos, key=lambda i: i.domain)

    def _update(self, name: str, seen: dict[str, _Scanned]) -> DomainInfo | None:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self._dir_fd)
        except OSError:
            return None  # gone, a symlink, or unreadable: not a domain we can show
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            known = self._files.get(name)
            if known is None or known.inode != st.st_ino or known.offset > st.st_size:
                domain = _domain_of(name, fd)
                if domain is None:
                    return None
                known = _Scanned(st.st_ino, domain, 0, 0)
            known.offset, new = _count_lines(fd, known.offset, st.st_size)
            known.events += new
            born = created_or_changed(fd) if st.st_size else None
        finally:
            os.close(fd)
        seen[name] = known
        segments, segment_bytes, oldest = archive_summary(
            self._dir_fd, name[: -len(DATA_SUFFIX)], st.st_ino, active_born=born)
        return DomainInfo(
            domain=known.domain,
            file=name,
            events=known.events,
            bytes=known.offset,
            last_event_at=st.st_mtime if known.events else None,
            disk_bytes=st.st_size + segment_bytes,
            segments=segments,
            oldest_event_at=oldest if segments or st.st_size else None,
        )


def _count_lines(fd: int, offset: int, size: int) -> tuple[int, int]:
    """(offset after the last newline, number of newlines) from `offset` to `size`."""
    count = 0
    end = offset
    pos = offset
    while pos < size:
        chunk = os.pread(fd, min(_BLOCK * 16, size - pos), pos)
        if not chunk:
            break
        newlines = chunk.count(b"\n")
        if newlines:
            count += newlines
            end = pos + chunk.rfind(b"\n") + 1
        pos += len(chunk)
    return end, count


def _domain_of(name: str, fd: int) -> str | None:
    """The domain whose data file is `name`: the stem itself, or — for long domains, whose file
    name is shortened with a hash — the `domain` field of the first line, checked against the
    name. Files of other names (written by hand, say) are no domain."""
    stem = name[: -len(DATA_SUFFIX)]
    try:
        if data_file_name(normalize_domain(stem)) == name and normalize_domain(stem) == stem:
            return stem
    except InvalidDomain:
        pass
    first = os.pread(fd, _FIRST_LINE_MAX, 0).split(b"\n", 1)[0]
    try:
        domain = orjson.loads(first).get("domain")
        if isinstance(domain, str) and data_file_name(domain) == name:
            return normalize_domain(domain) if normalize_domain(domain) == domain else None
    except (orjson.JSONDecodeError, AttributeError, InvalidDomain):
        pass
    return None
