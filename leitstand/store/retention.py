"""Retention (`LEITSTAND_RETAIN_AGE`, `LEITSTAND_RETAIN_BYTES`): per domain, closed segments only,
oldest (lowest `seq`) first. The active file is never deleted.

- by age: a segment goes once its last line is older than the age (its mtime; compression keeps
  the raw file's mtime);
- by bytes: the oldest segments go while the segments together take more than the limit on disk.

A raw segment is deleted only while holding its flock, so a compression in progress (which holds
it) is never raced: the segment is tried again next round, and no younger segment goes first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass

from .segments import Segment, list_segments

log = logging.getLogger("leitstand.store")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    max_age: float | None = None
    max_bytes: int | None = None

    @property
    def enabled(self) -> bool:
        return self.max_age is not None or self.max_bytes is not None


def apply_retention(archive_fd: int, policy: RetentionPolicy, now: float, *,
                    fsync: bool) -> list[Segment]:
    """Delete what the policy says from one domain's archive dir; returns the deleted ones."""
    segments = list_segments(archive_fd)
    sizes = {s.seq: _size(archive_fd, s) for s in segments}
    total = sum(size for size, _ in sizes.values())
    deleted: list[Segment] = []
    for segment in segments:
        size, written = sizes[segment.seq]
        too_old = policy.max_age is not None and written < now - policy.max_age
        too_big = policy.max_bytes is not None and total > policy.max_bytes
        if not (too_old or too_big) or not _delete(archive_fd, segment):
            break
        total -= size
        deleted.append(segment)
    if deleted:
        if fsync:
            os.fsync(archive_fd)
        log.info("retention deleted %d segment(s): %s", len(deleted),
                 ", ".join(s.name for s in deleted))
    return deleted


def _size(archive_fd: int, segment: Segment) -> tuple[int, float]:
    try:
        st = os.stat(segment.name, dir_fd=archive_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0, 0.0
    return st.st_size, st.st_mtime


def _delete(archive_fd: int, segment: Segment) -> bool:
    """Unlink every copy of the segment; False if a raw copy is busy (being compressed)."""
    raw = segment.name.removesuffix(segment.suffix) if segment.suffix else segment.name
    try:
        fd = os.open(raw, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=archive_fd)
    except FileNotFoundError:
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        for name in (raw, raw + ".zst", raw + ".gz"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=archive_fd)
        return True
    finally:
        if fd is not None:
            os.close(fd)
