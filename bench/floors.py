"""The disk floor: a plain loop of write() + fdatasync() per batch of lines, nothing else."""

from __future__ import annotations

import os
import time
from pathlib import Path


def disk_floor(directory: Path, line: bytes, *, lines_per_sync: int = 100,
               seconds: float = 5.0) -> dict[str, float]:
    """Append `lines_per_sync` copies of `line` per write and fdatasync after each, for
    `seconds`, to a fresh file in `directory` (so: on the same disk as the data dir)."""
    path = directory / "disk-floor.jsonl"
    chunk = line * lines_per_sync
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
    latencies: list[float] = []
    try:
        started = time.perf_counter()
        deadline = started + seconds
        now = started
        while now < deadline:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
            after = time.perf_counter()
            latencies.append(after - now)
            now = after
        elapsed = now - started
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    latencies.sort()
    syncs = len(latencies)
    return {
        "lines_per_second": syncs * lines_per_sync / elapsed,
        "syncs_per_second": syncs / elapsed,
        "sync_p50_ms": latencies[syncs // 2] * 1000,
        "sync_p99_ms": latencies[min(syncs - 1, int(syncs * 0.99))] * 1000,
        "lines_per_sync": lines_per_sync,
        "seconds": elapsed,
    }
