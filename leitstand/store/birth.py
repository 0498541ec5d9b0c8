"""When a file was created: its birth time (`stx_btime` of `statx(2)`), where the system and the
file system report one (Linux with glibc >= 2.28 on ext4, xfs, btrfs, tmpfs, ...).

A domain's file is created for its first line, so this is when a file's first line was written
when no record says so (`segments.archive_summary`, `DataFile.first_line_at`). Python has no
`os.statx` before 3.15, hence the one libc call through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import struct

_AT_EMPTY_PATH = 0x1000
_STATX_BTIME = 0x800
_STATX_SIZE = 256  # sizeof(struct statx)
_MASK_AT = 0  # offsetof(struct statx, stx_mask): __u32
_BTIME_AT = 80  # offsetof(struct statx, stx_btime): __s64 tv_sec, __u32 tv_nsec


def _load_statx() -> ctypes._NamedFuncPointer | None:
    try:
        statx = ctypes.CDLL(None, use_errno=True).statx
    except (AttributeError, OSError):
        return None
    statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    statx.restype = ctypes.c_int
    return statx


_statx = _load_statx()


def birth_time(fd: int) -> float | None:
    """The creation time of the open file `fd` (Unix time), or None if it is not known."""
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(fd, b"", _AT_EMPTY_PATH, _STATX_BTIME, buf) != 0:
        return None
    (mask,) = struct.unpack_from("=I", buf, _MASK_AT)
    if not mask & _STATX_BTIME:
        return None
    seconds: int
    nanoseconds: int
    seconds, nanoseconds = struct.unpack_from("=qI", buf, _BTIME_AT)
    return seconds + nanoseconds / 1e9


def created_or_changed(fd: int) -> float:
    """`birth_time`, else the last change (`st_mtime`): the closest known time that is not
    before the file's first line."""
    born = birth_time(fd)
    return born if born is not None else os.fstat(fd).st_mtime
