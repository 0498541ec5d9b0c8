"""The sink's sequence log of one domain, `.leitstand/<stem>.seq`: which stream sequences are in
the data file.

One JSON line per write: `{"q": last stream sequence written, "s": offset, "n": length,
"h": sha256, "i": inode}`. The line is appended (and, with fsync, made durable) *before* the
data; it counts only once the data file holds exactly those bytes there ("landed"). Only the
last line can be unlanded: after a failed write the log is compacted back to its last landed
line. Every call runs with the data file's lock held (see `domainsink.py`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import orjson

from ..store.files import FILE_MODE, OPEN_FLAGS, cut_partial_tail, replace_file, write_all

_COMPACT_LINES = 1024


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


class SeqLog:
    """Appends marks before the data they describe; compacts to the last landed one."""

    def __init__(self, stem: str, helper_fd: int, *, fsync: bool) -> None:
        self._name = stem + ".seq"
        self._helper_fd = helper_fd
        self._fsync = fsync
        self._fd: int | None = None
        self._lines = 0
        # A write failed after its mark was appended: that mark must go before the next one.
        self.void_last = False

    def read(self) -> list[Mark]:
        """Every mark in the log (a torn last line is cut off)."""
        try:
            fd = os.open(self._name, OPEN_FLAGS, dir_fd=self._helper_fd)
        except FileNotFoundError:
            return []
        try:
            size, _ = cut_partial_tail(fd, os.fstat(fd).st_size)
            data = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        marks = [m for m in map(Mark.from_line, data.splitlines()) if m is not None]
        self._lines = len(marks)
        return marks

    def append(self, mark: Mark, *, landed: Mark | None) -> None:
        """Log `mark` before its data is written; `landed`: the last mark whose data is in."""
        if self.void_last:
            self.compact(landed)
        if self._fd is None:
            self._fd = os.open(self._name, OPEN_FLAGS | os.O_CREAT, FILE_MODE,
                               dir_fd=self._helper_fd)
            if self._fsync:
                os.fsync(self._helper_fd)
        write_all(self._fd, mark.to_line())
        if self._fsync:
            os.fdatasync(self._fd)
        self._lines += 1

    def compact_if_large(self, landed: Mark | None) -> None:
        if self._lines >= _COMPACT_LINES:
            self.compact(landed)

    def compact(self, landed: Mark | None) -> None:
        """Rewrite the log as its last landed line (or empty)."""
        replace_file(self._name, self._helper_fd, landed.to_line() if landed else b"",
                     fsync=self._fsync)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self._name, OPEN_FLAGS, dir_fd=self._helper_fd)
        self._lines = 1 if landed else 0
        self.void_last = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
