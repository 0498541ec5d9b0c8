"""A reader's consistent picture of one domain's files: the retained segments and the active
file, each with its `seq` (see `segments.py`).

Taking it never blocks a writer: the active file is opened, its settled size taken (a shared
flock for one `fstat`, `reader.settled_size`), then the active-file record is read and the
segments listed. If the name no longer points at the opened file afterwards, a rotation happened
in between and the picture is taken again. Otherwise the listing and the record are at least as
new as the opened file, so the file's `seq` follows from them exactly as the writer decided it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from ..domains import file_stem
from ..errors import NotFound
from .files import identity, names
from .owner import is_shortened, read_owner
from .segments import (
    DIR_FLAGS,
    ActiveRecord,
    Segment,
    SegmentDir,
    active_seq,
    list_segments,
    open_archive,
)
from .sources import CompressedSource, RawSource, Source
from .streams import StreamCache

_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_ATTEMPTS = 50


class SegmentGone(Exception):
    """A segment listed a moment ago is gone (deleted by retention)."""


class DomainView:
    """Open files of one domain; `close()` when done."""

    def __init__(self, dir_fd: int, domain: str, settle: Callable[[int], int],
                 cache: StreamCache | None = None) -> None:
        self.domain = domain
        self._cache = cache
        self.stem = file_stem(domain)
        self._dir_fd = dir_fd
        self.active_fd: int | None = None
        self.active_ino = 0
        self.active_size = 0
        self.active_seq = 0
        self.segments: list[Segment] = []
        self._archive_fd: int | None = None
        self._take(settle)

    def _take(self, settle: Callable[[int], int]) -> None:
        name = self.stem + ".jsonl"
        for _ in range(_ATTEMPTS):
            self.close()
            fd = _open_active(name, self._dir_fd, self.domain)
            ino = identity(fd)[1] if fd is not None else 0
            try:
                size = settle(fd) if fd is not None else 0
                record = self._read_record()
            except BaseException:
                if fd is not None:
                    os.close(fd)
                raise
            self._archive_fd = open_archive(self._dir_fd, self.stem)
            segments = list_segments(self._archive_fd) if self._archive_fd is not None else []
            if fd is not None and not names(name, self._dir_fd, identity(fd)):
                os.close(fd)
                continue  # rotated meanwhile
            self.active_fd, self.active_ino, self.active_size = fd, ino, size
            self.segments = segments
            self.active_seq = active_seq(record, ino, segments)
            if fd is None and not segments:
                raise NotFound(f"unknown domain {self.domain!r}")
            return
        raise OSError(errno.EAGAIN, f"the files of {self.domain!r} kept changing while read")

    def _read_record(self) -> ActiveRecord | None:
        """The active-file record; `NotFound` if the (shortened) name belongs to another
        domain (see `owner.py`)."""
        try:
            helper = os.open(".leitstand", DIR_FLAGS, dir_fd=self._dir_fd)
        except OSError:
            return None
        try:
            if is_shortened(self.domain):
                owner = read_owner(helper, self.stem)
                if owner is not None and owner != self.domain:
                    raise NotFound(f"unknown domain {self.domain!r}")
            return SegmentDir(self.stem, self._dir_fd, helper, fsync=False).read_record()
        finally:
            os.close(helper)

    # -- the files in reading order ------------------------------------------------------------
    @property
    def first_seq(self) -> int:
        return self.segments[0].seq if self.segments else self.active_seq

    def next_seq(self, seq: int) -> int | None:
        """The `seq` of the file after `seq` (None: `seq` is the active file)."""
        if seq >= self.active_seq:
            return None
        for segment in self.segments:
            if segment.seq > seq:
                return segment.seq
        return self.active_seq

    def segment(self, seq: int) -> Segment | None:
        for segment in self.segments:
            if segment.seq == seq:
                return segment
        return None

    def written_at(self, seq: int) -> float | None:
        """When file `seq` was last written to (None: gone). Compression keeps the time."""
        segment = self.segment(seq)
        try:
            if segment is None or self._archive_fd is None:
                return os.fstat(self.active_fd).st_mtime if self.active_fd is not None else None
            return os.stat(segment.name, dir_fd=self._archive_fd, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            return None

    def open(self, seq: int) -> Source:
        """The bytes of file `seq`; `SegmentGone` if it was deleted meanwhile."""
        if seq == self.active_seq:
            if self.active_fd is None:
                return RawSource(-1, 0, owned=False)
            return RawSource(self.active_fd, self.active_size, owned=False)
        segment = self.segment(seq)
        for _ in range(2):
            if segment is None or self._archive_fd is None:
                break
            try:
                fd = os.open(segment.name, _READ_FLAGS, dir_fd=self._archive_fd)
            except FileNotFoundError:  # compressed (or deleted) since it was listed
                segment = next((s for s in list_segments(self._archive_fd) if s.seq == seq),
                               None)
                continue
            if segment.suffix:
                return CompressedSource(fd, segment.suffix, self._cache)
            return RawSource(fd, os.fstat(fd).st_size, owned=True)
        raise SegmentGone(seq)

    def close(self) -> None:
        if self.active_fd is not None:
            os.close(self.active_fd)
            self.active_fd = None
        if self._archive_fd is not None:
            os.close(self._archive_fd)
            self._archive_fd = None


def _open_active(name: str, dir_fd: int, domain: str) -> int | None:
    """A read-only fd on the active file; None if it is missing (a rotation in progress, or
    only segments are left). Never through a symlink, never waiting on a FIFO."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotFound(f"domain {domain!r} has no regular data file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotFound(f"domain {domain!r} has no regular data file")
    return fd
