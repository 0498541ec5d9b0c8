"""Rotation: closing a domain's active file and starting a new one, under the data file's flock.

Steps, with the active file locked and clean (whole lines; no group of the intent log open — the
caller ran its recovery first):

1. `fsync` the file (outside writers may not have), then `rename` it into
   `archive/<stem>/<UTC start>-<seq>.jsonl` and fsync both directories. The rename is atomic:
   after a crash every line is either still in the active file or in the segment, never in both.
2. Let go of the old file and lock the file the name points to now (created if missing; another
   writer may have created it first). A writer that waited for the old file's lock finds the name
   pointing elsewhere once it gets it, and follows (`DataFile.follow_rotation`, the documented
   protocol for outside writers), so nothing is ever appended to a closed segment.
3. Record the new active file (`segments.py`): it gets the next `seq`.

The intent log needs no change: its group lines name the data file by inode, and no group is open
across a rotation, so what it holds is committed keys — which keep answering retries.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..metrics import Metrics
from .datafile import DataFile
from .segments import ActiveRecord, Segment, SegmentDir, parse_segment_name, segment_name

log = logging.getLogger("leitstand.store")


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """When the active file is closed: once it holds `max_bytes`, or once its first line is
    older than `max_age` seconds (None: never for that reason)."""

    max_bytes: int | None = None
    max_age: float | None = None

    @property
    def enabled(self) -> bool:
        return self.max_bytes is not None or self.max_age is not None

    def due(self, size: int, record: ActiveRecord, now: float) -> bool:
        if size == 0:
            return False
        if self.max_bytes is not None and size >= self.max_bytes:
            return True
        return (self.max_age is not None and record.start is not None
                and now - record.start >= self.max_age)


class Rotation:
    """Rotates one data file (`DomainFile` of the store, or the NATS sink's `DomainSink`)."""

    def __init__(self, file: DataFile, policy: RotationPolicy, metrics: Metrics) -> None:
        self.file = file
        self.policy = policy
        self.segments = SegmentDir(file.stem, file.dir_fd, file.helper_fd, fsync=file.fsync)
        self._metrics = metrics
        self.after_rotate: Callable[[], None] | None = None  # e.g. wake the compressor

    def before_write(self, size: int) -> bool:
        """(Lock held, file clean at `size`.) Rotate if due; True if it did (the caller then
        recovers the new file and calls again). Notes when an empty file gets its first line."""
        now = time.time()
        if not self.policy.due(size, self._record(size, now), now):
            return False
        self.rotate()
        return True

    def rotate_if_old(self, size: int, now: float) -> bool:
        """(Lock held, file clean at `size`.) Rotate if due, also when nothing is about to be
        written (the upkeep's age check of an idle file); True if it did."""
        if size == 0:
            return False  # nothing to close, and no first line to note the time of
        if not self.policy.due(size, self._record(size, now), now):
            return False
        self.rotate()
        return True

    def _record(self, size: int, now: float) -> ActiveRecord:
        """The active file's record, noting when its first line was written if it does not say
        (`DataFile.first_line_at`; asked only then, as it costs a system call)."""
        assert self.file.fd is not None
        inode = self.file.inode
        record = self.segments.active_record(inode, first_line_at=now if size == 0 else None)
        if record.start is None and size > 0:
            record = self.segments.active_record(
                inode, first_line_at=self.file.first_line_at(size, now))
        return record

    def rotate(self) -> Segment | None:
        """(Lock held, file clean.) Close the active file as the next segment; None if it is
        empty (nothing to close). Afterwards the file holds the lock on the new active file
        (or raises `FileMoved`, see `DataFile.follow_rotation`)."""
        file = self.file
        assert file.fd is not None
        if file.size() == 0:
            return None
        # The seq against a fresh listing: a record can be stale after a crash (see segments.py)
        record = self.segments.active_record(file.inode, segments=self.segments.listing())
        name = segment_name(record.start or time.time(), record.seq)
        archive = self.segments.open(create=True)
        assert archive is not None
        try:
            if file.fsync:
                os.fsync(file.fd)
            os.rename(file.name, name, src_dir_fd=file.dir_fd, dst_dir_fd=archive)
            if file.fsync:
                os.fsync(archive)
                os.fsync(file.dir_fd)
        finally:
            os.close(archive)
        log.info("rotated %s to %s/%s/%s", file.name, "archive", file.stem, name)
        self._metrics.rotations.labels(self._metrics.domain_label(file.label)).inc()
        try:
            # May raise `FileMoved` (another writer has the new file); the rotation is complete
            # then, and the record of the new file is written by whoever writes to it first.
            file.follow_rotation()
        finally:
            if self.after_rotate is not None:
                self.after_rotate()  # the closed segment's lock is free by now
        self.segments.active_record(file.inode)
        segment = parse_segment_name(name)
        assert segment is not None
        return segment
