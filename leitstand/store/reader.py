"""The read side of the JSONL store: whole lines from a cursor, and cheap per-domain stats.

Readers never hold the writers' flock while they read. To learn how far the file is settled they
take it shared for the instant of one `fstat` (waiting at most `SETTLE_WAIT` seconds for a writer's
group to finish): bytes below that size belong to groups whose writers have finished — a group
still being written, which a failed write, fsync or crash may yet cut back, lies beyond it. Of the
settled bytes only whole `\\n`-terminated lines are handed out.

A cursor is opaque to clients: url-safe base64 of a version byte, the file's inode and the byte
offset just after a line. A cursor whose inode is not the file's any more (the file was rotated
or replaced) or that points past the end (the file was truncated) starts again at the beginning
of the file that is there now. A cursor that is not at a line boundary was not handed out by us:
400. (An inode number can be reused by a new file; such a cursor is then taken for that file.)
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import os
import stat
import struct
import threading
import time
from dataclasses import dataclass

import anyio.to_thread
import orjson

from ..domains import DATA_SUFFIX, data_file_name, normalize_domain
from ..errors import BadCursor, InvalidDomain, NotFound
from .base import Batch, DomainInfo
from .files import partial_tail_start

_BLOCK = 65536
_CURSOR = struct.Struct(">BQQ")
_CURSOR_VERSION = 1
_CURSOR_CHARS = len(base64.urlsafe_b64encode(b"\0" * _CURSOR.size).rstrip(b"="))
# A page of lines stops early once it holds this many bytes (it always holds one whole line).
MAX_BATCH_BYTES = 4 * 1024 * 1024
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

    async def domains(self) -> list[DomainInfo]:
        return await anyio.to_thread.run_sync(self._stats.snapshot)

    async def read(self, domain: str, *, cursor: str | None, limit: int,
                   tail: int | None) -> Batch:
        return await anyio.to_thread.run_sync(
            lambda: read_batch(self._dir_fd, domain, cursor=cursor, limit=limit, tail=tail)
        )


def encode_cursor(inode: int, offset: int) -> str:
    raw = _CURSOR.pack(_CURSOR_VERSION, inode, offset)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """(inode, offset) of a cursor; `BadCursor` if it is not one of ours."""
    if len(cursor) != _CURSOR_CHARS:
        raise BadCursor("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=")
        version, inode, offset = _CURSOR.unpack(raw)
    except (ValueError, binascii.Error, struct.error, UnicodeEncodeError):
        raise BadCursor("invalid cursor") from None
    if version != _CURSOR_VERSION:
        raise BadCursor("invalid cursor")
    return inode, offset


def open_for_reading(name: str, dir_fd: int, domain: str) -> tuple[int, os.stat_result]:
    """A read-only fd on the domain's data file; `NotFound` if it is missing or not a regular
    file (a symlink is never followed; O_NONBLOCK: opening a FIFO must not wait for a writer)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise NotFound(f"unknown domain {domain!r}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotFound(f"domain {domain!r} has no regular data file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotFound(f"domain {domain!r} has no regular data file")
    return fd, st


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


def read_batch(
    dir_fd: int, domain: str, *, cursor: str | None, limit: int, tail: int | None,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Batch:
    """Whole lines of `domain` after `cursor` (or the last `tail` lines), at most `limit`."""
    start_inode: int | None = None
    offset = 0
    if cursor is not None:
        start_inode, offset = decode_cursor(cursor)
    fd, st = open_for_reading(data_file_name(domain), dir_fd, domain)
    try:
        size = settled_size(fd)
        if tail is not None:
            end = partial_tail_start(fd, size)
            offset = _start_of_last_lines(fd, end, tail)
            limit = tail
        elif start_inode is not None and (start_inode != st.st_ino or offset > size):
            offset = 0
        elif offset > 0 and os.pread(fd, 1, offset - 1) != b"\n":
            raise BadCursor("cursor does not point at the end of a line")
        lines, ends = _read_lines(fd, offset, size, limit, max_bytes)
    finally:
        os.close(fd)
    cursors = [encode_cursor(st.st_ino, end) for end in ends]
    return Batch(lines, cursors, cursors[-1] if cursors else encode_cursor(st.st_ino, offset))


def _read_lines(
    fd: int, offset: int, size: int, limit: int, max_bytes: int
) -> tuple[list[bytes], list[int]]:
    """Up to `limit` whole lines from `offset`, stopping at `size` or after `max_bytes`."""
    lines: list[bytes] = []
    ends: list[int] = []
    buf = b""
    base = offset  # file offset of buf[0]
    read_to = offset
    taken = 0
    while len(lines) < limit and taken < max_bytes and read_to < size:
        chunk = os.pread(fd, min(_BLOCK, size - read_to), read_to)
        if not chunk:
            break
        read_to += len(chunk)
        buf += chunk
        start = 0
        while len(lines) < limit and taken < max_bytes:
            newline = buf.find(b"\n", start)
            if newline < 0:
                break
            lines.append(buf[start:newline + 1])
            taken += newline + 1 - start
            start = newline + 1
            ends.append(base + start)
        buf = buf[start:]
        base += start
    return lines, ends


def _start_of_last_lines(fd: int, end: int, count: int) -> int:
    """Offset of the first of the last `count` whole lines ending at `end`."""
    if count <= 0 or end == 0:
        return end
    seen = 0
    pos = end - 1  # the newline that ends the last line is not a line start
    while pos > 0:
        start = max(0, pos - _BLOCK)
        block = os.pread(fd, pos - start, start)
        idx = len(block)
        while (idx := block.rfind(b"\n", 0, idx)) >= 0:
            seen += 1
            if seen == count:
                return start + idx + 1
        pos = start
    return 0


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
        finally:
            os.close(fd)
        seen[name] = known
        return DomainInfo(
            domain=known.domain,
            file=name,
            events=known.events,
            bytes=known.offset,
            last_event_at=st.st_mtime if known.events else None,
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
