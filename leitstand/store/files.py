"""Low-level file operations shared by the store's parts. All paths are relative to a directory
fd and never follow a symlink in the last component."""

from __future__ import annotations

import errno
import hashlib
import os
import stat

from ..errors import DiskFull, LeitstandError, NotARegularFile, StorageFailed

OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
FILE_MODE = 0o600
_SCAN = 65536


def open_append(name: str, dir_fd: int, *, create: bool = True) -> tuple[int, bool]:
    """Open `name` for appending, creating it (mode 0600) if missing and `create`.
    Returns (fd, created)."""
    try:
        try:
            if not create:
                raise FileExistsError
            fd = os.open(name, OPEN_FLAGS | os.O_CREAT | os.O_EXCL, FILE_MODE, dir_fd=dir_fd)
            created = True
        except FileExistsError:
            fd = os.open(name, OPEN_FLAGS, dir_fd=dir_fd)
            created = False
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise NotARegularFile(f"{name} is a directory; refusing to write to it") from exc
        if exc.errno == errno.ELOOP:
            raise NotARegularFile(
                f"{name} is a symbolic link; refusing to write through it"
            ) from exc
        raise storage_error(exc, f"cannot open {name}") from exc
    if not _is_regular(fd):
        os.close(fd)
        raise NotARegularFile(f"{name} is not a regular file; refusing to write to it")
    return fd, created


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def same_file(fd: int, name: str, dir_fd: int) -> bool:
    """Whether `name` still names the file open as `fd` (it may have been rotated away)."""
    return names(name, dir_fd, identity(fd))


def identity(fd: int) -> tuple[int, int]:
    """(device, inode) of an open file, to tell later whether its name still points to it."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def names(name: str, dir_fd: int, ident: tuple[int, int]) -> bool:
    """Whether `name` still names the file with identity `ident` (it may have been rotated
    away or replaced)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == ident


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def holds(fd: int, start: int, length: int, digest: str) -> bool:
    """Whether the file holds bytes whose sha256 is `digest` at `[start, start + length)`."""
    return hashlib.sha256(os.pread(fd, length, start)).hexdigest() == digest


def replace_file(name: str, dir_fd: int, payload: bytes, *, fsync: bool) -> None:
    """Replace `name` by a file holding `payload`, all at once: written as `<name>.tmp` and
    renamed over it (with `fsync`, the content is durable before the rename, the rename after)."""
    tmp = name + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 FILE_MODE, dir_fd=dir_fd)
    try:
        write_all(fd, payload)
        if fsync:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if fsync:
        os.fsync(dir_fd)


def partial_tail_start(fd: int, size: int) -> int:
    """Offset just past the last newline of the first `size` bytes (0 if there is none)."""
    end = size
    while end > 0:
        start = max(0, end - _SCAN)
        block = os.pread(fd, end - start, start)
        pos = block.rfind(b"\n")
        if pos >= 0:
            return start + pos + 1
        end = start
    return 0


def whole_lines_end(fd: int, size: int) -> int:
    """Where the last whole line of the first `size` bytes ends (`size` if they end in one)."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    return partial_tail_start(fd, size)


def cut_partial_tail(fd: int, size: int) -> tuple[int, bytes]:
    """If the file does not end in a newline, cut the torn tail off. Returns (new size, tail)."""
    keep = whole_lines_end(fd, size)
    if keep == size:
        return size, b""
    tail = os.pread(fd, size - keep, keep)
    os.ftruncate(fd, keep)
    return keep, tail


def storage_error(exc: OSError, what: str) -> LeitstandError:
    """Translate an OSError from the write path into the answer the client gets."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{what}: disk full", headers={"Retry-After": "60"})
    if exc.errno == errno.EFBIG:  # a file size limit (RLIMIT_FSIZE, the file system's maximum)
        return DiskFull(f"{what}: file size limit reached", headers={"Retry-After": "60"})
    return StorageFailed(
        f"{what}: {os.strerror(exc.errno) if exc.errno else exc}", headers={"Retry-After": "5"}
    )
