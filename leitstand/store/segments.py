"""Closed segments of a domain and the record of its active file.

A rotation renames the active file `<stem>.jsonl` to `archive/<stem>/<UTC start>-<seq>.jsonl`
(later compressed to `.jsonl.zst` or `.jsonl.gz`). `seq` numbers a domain's files in the order
they were written: 1, 2, 3, ... and the active file has the next number. Names sort by time (the
UTC time of the file's first line, then `seq`); readers order by `seq`.

`.leitstand/<stem>.seg` records which inode the active file is and which `seq` it will get when
it is closed, and when its first line was written: `{"ino": .., "seq": .., "start": ..}`. It is
replaced atomically and only written while the active file's flock is held. When it does not
name the active file (nothing was ever rotated, or a crash hit between a rotation's rename and
the record's update), the active file's `seq` is one more than the largest known one — the same
rule for writers and readers, so both always agree.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import os
import re
import time
from dataclasses import dataclass

import orjson

from .files import replace_file

ARCHIVE_DIR = "archive"
RECORD_SUFFIX = ".seg"
COMPRESSED_SUFFIXES = (".zst", ".gz")
_NAME = re.compile(r"(\d{8}T\d{6}Z)-(\d{8,})\.jsonl(\.zst|\.gz)?")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Segment:
    """A closed file of a domain. `suffix`: "" (raw), ".zst" or ".gz"."""

    seq: int
    start: str  # the UTC time of its first line, as in the name (20261203T081500Z)
    name: str
    suffix: str

    @property
    def start_time(self) -> float:
        return float(calendar.timegm(time.strptime(self.start, "%Y%m%dT%H%M%SZ")))


@dataclass(frozen=True, slots=True)
class ActiveRecord:
    ino: int
    seq: int
    start: float | None  # Unix time of the active file's first line, when known


def segment_name(start: float, seq: int) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(start))}-{seq:08d}.jsonl"


def parse_segment_name(name: str) -> Segment | None:
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return Segment(int(match.group(2)), match.group(1), name, match.group(3) or "")


class SegmentDir:
    """The segments of one domain (`archive/<stem>/`) and its active-file record."""

    def __init__(self, stem: str, dir_fd: int, helper_fd: int, *, fsync: bool) -> None:
        self.stem = stem
        self._dir_fd = dir_fd
        self._helper_fd = helper_fd
        self._fsync = fsync
        self._record_name = stem + RECORD_SUFFIX

    # -- the archive directory -----------------------------------------------------------------
    def open(self, *, create: bool = False) -> int | None:
        """A descriptor of `archive/<stem>/` (None if it does not exist and not `create`)."""
        archive = _open_subdir(self._dir_fd, ARCHIVE_DIR, create=create, fsync=self._fsync)
        if archive is None:
            return None
        try:
            return _open_subdir(archive, self.stem, create=create, fsync=self._fsync)
        finally:
            os.close(archive)

    def listing(self) -> list[Segment]:
        """Every closed segment, by `seq`; of a segment that exists raw and compressed (a
        compression that has not removed the raw copy yet) only the raw one."""
        fd = self.open()
        if fd is None:
            return []
        try:
            return list_segments(fd)
        finally:
            os.close(fd)

    # -- the active file's record (lock held for writing) --------------------------------------
    def read_record(self) -> ActiveRecord | None:
        try:
            fd = os.open(self._record_name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW,
                         dir_fd=self._helper_fd)
        except FileNotFoundError:
            return None
        try:
            item = orjson.loads(os.read(fd, 4096))
            return ActiveRecord(int(item["ino"]), int(item["seq"]), item.get("start"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        finally:
            os.close(fd)

    def write_record(self, record: ActiveRecord) -> None:
        payload = orjson.dumps({"ino": record.ino, "seq": record.seq, "start": record.start})
        replace_file(self._record_name, self._helper_fd, payload, fsync=self._fsync)

    def active_record(self, ino: int, *, first_line_at: float | None = None,
                      segments: list[Segment] | None = None) -> ActiveRecord:
        """(Lock held.) The record of the active file `ino`, written now if it named another
        file, or to note `first_line_at` (the file is empty and about to get its first line).
        With `segments` (a fresh listing) a record whose `seq` is taken is corrected too: the
        inode of a file that was rotated away (and compressed) can come back for a new file.
        Read from disk every time: other processes rotate too."""
        record = self.read_record()
        seq = None
        if record is None or record.ino != ino:
            seq = active_seq(record, ino, self.listing() if segments is None else segments)
        elif segments is not None:
            seq = active_seq(record, ino, segments)
        if seq is not None and (record is None or record.ino != ino or record.seq != seq):
            record = ActiveRecord(ino, seq, first_line_at)
            self.write_record(record)
        elif record is not None and record.start is None and first_line_at is not None:
            record = ActiveRecord(ino, record.seq, first_line_at)
            self.write_record(record)
        assert record is not None
        return record


def active_seq(record: ActiveRecord | None, ino: int, segments: list[Segment]) -> int:
    """The `seq` of the active file with inode `ino` (see the module docstring)."""
    known = max((s.seq for s in segments), default=0)
    if record is not None and record.ino == ino and record.seq > known:
        return record.seq
    if record is not None:
        known = max(known, record.seq)
    return known + 1


def list_segments(fd: int) -> list[Segment]:
    found: dict[int, Segment] = {}
    with os.scandir(fd) as entries:
        for entry in entries:
            segment = parse_segment_name(entry.name)
            if segment is None:
                continue
            known = found.get(segment.seq)
            if known is None or segment.suffix == "":
                found[segment.seq] = segment
    return [found[seq] for seq in sorted(found)]


def _open_subdir(parent: int, name: str, *, create: bool, fsync: bool) -> int | None:
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
            if fsync:
                os.fsync(parent)
        except FileExistsError:
            pass
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RuntimeError(f"{name} is not a directory (a symlink?); refusing to use it"
                               ) from exc
        raise


def open_archive(dir_fd: int, stem: str) -> int | None:
    """`archive/<stem>/`, each step without following a symlink; None if it is missing or not
    a directory (never raises: for readers and the upkeep thread)."""
    try:
        archive = os.open(ARCHIVE_DIR, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.open(stem, DIR_FLAGS, dir_fd=archive)
    except OSError:
        return None
    finally:
        os.close(archive)


def archive_summary(dir_fd: int, stem: str, active_ino: int, *,
                    active_born: float | None = None) -> tuple[int, int, float | None]:
    """(segments, their bytes on disk, when the oldest retained line was written) of a domain,
    for `/v1/domains` and the metrics. Never raises for a missing or odd archive.

    The oldest line is the first segment's, else the active file's first one as its record
    notes it (rotation on), else `active_born`: when the active file was created (a domain's
    file is created for its first line; `birth.py`), what a rotating writer will note for it
    (`DataFile.first_line_at`)."""
    segments: list[Segment] = []
    size = 0
    folder = open_archive(dir_fd, stem)
    if folder is not None:
        try:
            segments = list_segments(folder)
            for segment in segments:
                with contextlib.suppress(FileNotFoundError):
                    size += os.stat(segment.name, dir_fd=folder, follow_symlinks=False).st_size
        finally:
            os.close(folder)
    if segments:
        return len(segments), size, segments[0].start_time
    record = None
    with contextlib.suppress(OSError):
        helper = os.open(".leitstand", DIR_FLAGS, dir_fd=dir_fd)
        try:
            record = SegmentDir(stem, dir_fd, helper, fsync=False).read_record()
        finally:
            os.close(helper)
    if record is not None and record.ino == active_ino and record.start is not None:
        return 0, 0, record.start
    return 0, 0, active_born
