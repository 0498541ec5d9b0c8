"""The free-space guard: a write that would leave less than `LEITSTAND_MIN_FREE_BYTES` free on
the data dir's file system is refused (507) before a byte of it is written. The disk then never
fills to the last byte, so repairs, the intent log and rotation still have room."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LowDiskSpace
from ..metrics import Metrics

DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024


class SpaceGuard:
    """Checks the free space of the file system holding `dir_fd` (0 bytes: never refuses)."""

    def __init__(self, dir_fd: int, min_free: int, metrics: Metrics) -> None:
        self._dir_fd = dir_fd
        self.min_free = min_free
        self._metrics = metrics

    def free(self) -> int:
        """Bytes an unprivileged writer may still use on the data dir's file system."""
        st = os.fstatvfs(self._dir_fd)
        return st.f_bavail * st.f_frsize

    def free_or_nan(self) -> float:
        """`free()` for a metrics scrape, which must not fail (the store may be closed)."""
        try:
            return float(self.free())
        except OSError:
            return float("nan")

    def check(self, size: int) -> None:
        """Raise `LowDiskSpace` if writing `size` more bytes would leave less than the minimum."""
        if self.min_free <= 0:
            return
        free = self.free()
        if free - size < self.min_free:
            self._metrics.space_refusals.inc()
            raise LowDiskSpace(
                f"not enough free space: storing {size} bytes would leave {max(0, free - size)} "
                f"bytes free on the data dir's file system, less than LEITSTAND_MIN_FREE_BYTES "
                f"({self.min_free})",
                headers={"Retry-After": "60"},
            )


def storage_space(data_dir: Path, min_free: int) -> dict[str, int | None]:
    """What the read side shows about the guard: free bytes now (None if unknown) and the
    minimum."""
    try:
        st = os.statvfs(data_dir)
        free: int | None = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    return {"free_bytes": free, "min_free_bytes": min_free}
