"""Decompression positions kept between reads of a compressed segment.

A cursor counts uncompressed bytes, and neither zstd nor gzip can seek: reaching offset N means
decompressing everything before it. A reader paging through a large segment would pay that again
for every page. So after a page the decompressor is kept, with the last block it produced, keyed
by the file's identity (a compressed segment never changes); the next page that starts at or
after that block continues from there. A few positions are kept per process; each is used by one
reader at a time.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

Key = tuple[int, ...]  # device, inode, size, mtime and ctime of a compressed segment


@dataclass(slots=True)
class Position:
    """A decompressor over its own descriptor; `chunk` starts at uncompressed offset `start`."""

    file: BinaryIO
    stream: BinaryIO
    start: int = 0
    chunk: bytes = b""

    @classmethod
    def open(cls, fd: int, suffix: str) -> Position:
        file = os.fdopen(os.dup(fd), "rb")
        file.seek(0)
        stream: BinaryIO
        if suffix == ".zst":
            stream = zstandard.ZstdDecompressor().stream_reader(
                file, read_across_frames=True, closefd=False)
        else:
            stream = gzip.GzipFile(fileobj=file, mode="rb")  # type: ignore[assignment]
        return cls(file, stream)

    @property
    def end(self) -> int:
        return self.start + len(self.chunk)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stream.close()
        self.file.close()


class StreamCache:
    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[Key, Position] = OrderedDict()
        self.hits = 0

    def take(self, key: Key, offset: int) -> Position | None:
        """The kept position of `key` if reading can continue from it up to `offset`."""
        with self._lock:
            position = self._items.pop(key, None)
            if position is not None and position.start <= offset:
                self.hits += 1
                return position
        if position is not None:
            position.close()
        return None

    def give(self, key: Key, position: Position) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            self._items[key] = position
            evicted = [self._items.popitem(last=False)[1]
                       for _ in range(max(0, len(self._items) - self._size))]
        for item in ([old] if old is not None else []) + evicted:
            item.close()

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), OrderedDict()
        for item in items:
            item.close()
