"""Compressing closed segments (`LEITSTAND_COMPRESS`: zstd, gzip or none), crash-safe.

For a raw segment `X.jsonl`, holding `flock(LOCK_EX)` on it (so two workers never compress the
same segment, and retention never deletes one being compressed):

1. write `X.jsonl.zst.tmp` (or `.gz.tmp`), fsync it, give it the raw file's mtime;
2. rename it to `X.jsonl.zst`, fsync the directory — from now on the compressed copy is whole;
3. unlink `X.jsonl`, fsync the directory.

A crash before 2 leaves an incomplete `.tmp` next to the raw file; one between 2 and 3 leaves a
whole compressed copy next to the raw one. `clean` (run at start, before anything is compressed)
removes whichever copy is the redundant one: the `.tmp`, or the raw file when the compressed copy
exists. So after a start no line is in both a raw and a compressed copy. (Readers meanwhile
prefer the raw copy and fall back to the compressed one when the raw one disappears.)
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import os
import shutil
from collections.abc import Iterator

import zstandard

from .files import FILE_MODE, identity, names
from .segments import Segment, list_segments

log = logging.getLogger("leitstand.store")

SUFFIXES = {"zstd": ".zst", "gzip": ".gz"}
_TMP = ".tmp"
_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW


def clean(archive_fd: int, *, fsync: bool) -> int:
    """Remove the redundant copies a crash left in one domain's archive dir; returns how many."""
    with os.scandir(archive_fd) as entries:
        entries_names = {e.name for e in entries}
    removed = 0
    for name in sorted(entries_names):
        if name.endswith(_TMP):
            raw = _raw_name(name[: -len(_TMP)])
            with _locked(archive_fd, raw) as free:
                if free:  # else it is being compressed right now
                    removed += _unlink(archive_fd, name)
        elif any(name.endswith(".jsonl" + s) for s in SUFFIXES.values()):
            raw = _raw_name(name)
            if raw is not None and raw in entries_names:
                removed += _unlink(archive_fd, raw)  # the compressed copy is whole
    if removed and fsync:
        os.fsync(archive_fd)
    return removed


def compress_segment(archive_fd: int, segment: Segment, method: str, *, fsync: bool) -> bool:
    """Compress one raw segment as above; False if it is busy or gone (try again later)."""
    suffix = SUFFIXES[method]
    try:
        raw_fd = os.open(segment.name, _READ, dir_fd=archive_fd)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(raw_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not names(segment.name, archive_fd, identity(raw_fd)):
            return False  # compressed or deleted by another process meanwhile
        final = segment.name + suffix
        if not _exists(archive_fd, final):
            _write_compressed(archive_fd, raw_fd, final, method, fsync=fsync)
        os.unlink(segment.name, dir_fd=archive_fd)
        if fsync:
            os.fsync(archive_fd)
        return True
    finally:
        os.close(raw_fd)


def raw_segments(archive_fd: int) -> list[Segment]:
    return [s for s in list_segments(archive_fd) if s.suffix == ""]


def _write_compressed(archive_fd: int, raw_fd: int, final: str, method: str, *,
                      fsync: bool) -> None:
    tmp = final + _TMP
    out_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                     FILE_MODE, dir_fd=archive_fd)
    try:
        with os.fdopen(os.dup(raw_fd), "rb") as source, os.fdopen(os.dup(out_fd), "wb") as sink:
            if method == "zstd":
                zstandard.ZstdCompressor(level=3).copy_stream(source, sink)
            else:
                with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as packed:
                    shutil.copyfileobj(source, packed, 1024 * 1024)
        if fsync:
            os.fsync(out_fd)
        st = os.fstat(raw_fd)
        os.utime(out_fd, ns=(st.st_atime_ns, st.st_mtime_ns))  # retention goes by this time
    except BaseException:
        os.close(out_fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=archive_fd)
        raise
    os.close(out_fd)
    os.rename(tmp, final, src_dir_fd=archive_fd, dst_dir_fd=archive_fd)
    if fsync:
        os.fsync(archive_fd)


def _raw_name(compressed: str) -> str | None:
    for suffix in SUFFIXES.values():
        if compressed.endswith(suffix):
            return compressed[: -len(suffix)]
    return None


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def _locked(dir_fd: int, name: str | None) -> Iterator[bool]:
    """Holds the raw segment's flock if nobody else does (yields False if someone does); a
    missing raw segment needs no lock."""
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd) if name is not None else None
    except FileNotFoundError:
        fd = None
    if fd is None:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _unlink(dir_fd: int, name: str) -> int:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0
    log.info("removed %s, left over from an interrupted compression", name)
    return 1
