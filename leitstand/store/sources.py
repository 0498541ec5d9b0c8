"""The bytes of one file of a domain as a reader sees them: the active file up to its settled
size, a raw closed segment, or a compressed one (`.zst`, `.gz`) decompressed on the fly. Offsets
always count uncompressed bytes."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator

from ..errors import BadCursor
from .files import partial_tail_start
from .streams import Position, StreamCache

BLOCK = 65536
_SKIP = 1024 * 1024


class Source:
    """A file's bytes from an offset on. `chunks(offset)` yields them in blocks up to the end
    (raises `BadCursor` if `offset` lies beyond it)."""

    def chunks(self, offset: int) -> Iterator[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def after_newline(self, offset: int) -> bool:
        """Whether `offset` is 0 or just after a `\\n` (where our cursors point)."""
        if offset == 0:
            return True
        for chunk in self.chunks(offset - 1):
            return chunk[:1] == b"\n"
        return False


class RawSource(Source):
    """A plain file read with `pread` up to `size` (the settled size of the active file)."""

    def __init__(self, fd: int, size: int, *, owned: bool) -> None:
        self.fd = fd
        self.size = size
        self._owned = owned

    def chunks(self, offset: int) -> Iterator[bytes]:
        if offset > self.size:
            raise BadCursor("cursor points beyond the end of its file")
        while offset < self.size:
            chunk = os.pread(self.fd, min(BLOCK, self.size - offset), offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._owned:
            os.close(self.fd)


class CompressedSource(Source):
    """A compressed segment, decompressed on the fly (continuing from a kept position when there
    is one, see `streams.py`)."""

    def __init__(self, fd: int, suffix: str, cache: StreamCache | None = None) -> None:
        self._fd = fd
        self._suffix = suffix
        self._cache = cache
        st = os.fstat(fd)
        # An inode number comes back once a file is deleted: size and times tell files apart.
        self._key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def chunks(self, offset: int) -> Iterator[bytes]:
        position = self._cache.take(self._key, offset) if self._cache is not None else None
        if position is None:
            position = Position.open(self._fd, self._suffix)
        try:
            while position.end < offset:
                data = position.stream.read(_SKIP if offset - position.end > BLOCK else BLOCK)
                if not data:
                    raise BadCursor("cursor points beyond the end of its file")
                position.start, position.chunk = position.end, data
            first = position.chunk[offset - position.start:]
            if first:
                yield first
            while data := position.stream.read(BLOCK):
                position.start, position.chunk = position.end, data
                yield data
        finally:
            if self._cache is not None:
                self._cache.give(self._key, position)
            else:
                position.close()

    def close(self) -> None:
        os.close(self._fd)


def read_lines(source: Source, offset: int, limit: int, max_bytes: int
               ) -> tuple[list[bytes], list[int], bool]:
    """Up to `limit` whole lines from `offset` (stopping after `max_bytes`): (lines, the offset
    after each, whether the file's end was reached)."""
    lines: list[bytes] = []
    ends: list[int] = []
    buf = b""
    base = offset  # file offset of buf[0]
    taken = 0
    if limit <= 0 or max_bytes <= 0:
        return lines, ends, False
    for chunk in source.chunks(offset):
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
        if len(lines) >= limit or taken >= max_bytes:
            return lines, ends, False
    return lines, ends, True


def start_of_last_lines(source: Source, count: int) -> tuple[int, int]:
    """(offset of the first of the last `count` whole lines, how many lines there are of them)."""
    if isinstance(source, RawSource):
        return _start_of_last_raw_lines(source, count)
    starts: deque[int] = deque([0], maxlen=count + 1)
    pos = 0
    for chunk in source.chunks(0):
        index = chunk.find(b"\n")
        while index >= 0:
            starts.append(pos + index + 1)
            index = chunk.find(b"\n", index + 1)
        pos += len(chunk)
    # `starts` ends with the offset after the last line, which starts no line
    return starts[0], len(starts) - 1


def _start_of_last_raw_lines(source: RawSource, count: int) -> tuple[int, int]:
    """As `start_of_last_lines`, scanning a plain file backwards from its end."""
    end = partial_tail_start(source.fd, source.size)  # a torn tail is no line
    seen = 0
    pos = end - 1 if end else 0  # the newline that ends the last line starts no line
    while pos > 0:
        start = max(0, pos - BLOCK)
        block = os.pread(source.fd, pos - start, start)
        index = len(block)
        while (index := block.rfind(b"\n", 0, index)) >= 0:
            seen += 1
            if seen == count:
                return start + index + 1, seen
        pos = start
    return 0, seen + (1 if end else 0)
