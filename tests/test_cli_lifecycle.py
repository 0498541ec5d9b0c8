"""`leitstand rotate` and `leitstand export` as real processes on a real data directory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from leitstand.metrics import Metrics
from leitstand.store import JsonlStore, StoreOptions
from testing import ROOT


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "leitstand.cli", *args], cwd=ROOT,
                          capture_output=True, timeout=120, check=False)


def _append(data: Path, numbers: range) -> None:
    async def run() -> None:
        store = JsonlStore(data, Metrics(), StoreOptions())
        try:
            for n in numbers:
                await store.append("aussen", [orjson.dumps({"n": n}) + b"\n"])
        finally:
            await store.close()

    asyncio.run(run())


def _numbers(out: bytes) -> list[int]:
    return [orjson.loads(line)["n"] for line in out.splitlines()]


def test_rotate_then_export_everything_or_since_a_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _append(data, range(0, 5))
    rotated = _cli("rotate", "--domain", "Aussen", "--data-dir", str(data))
    assert rotated.returncode == 0, rotated.stderr
    segment = data / rotated.stdout.decode().strip()
    assert segment.parent == data / "archive" / "aussen" and segment.is_file()
    assert (data / "aussen.jsonl").stat().st_size == 0
    empty = _cli("rotate", "--domain", "aussen", "--data-dir", str(data))
    assert empty.returncode == 0 and b"nothing to rotate" in empty.stderr
    missing = _cli("rotate", "--domain", "nirgends", "--data-dir", str(data))
    assert missing.returncode == 1 and b"no active file" in missing.stderr

    _append(data, range(5, 8))  # the store continues in the new active file
    everything = _cli("export", "--domain", "aussen", "--data-dir", str(data))
    assert everything.returncode == 0, everything.stderr
    assert _numbers(everything.stdout) == list(range(8))
    two_days_ago = time.time() - 2 * 86_400
    os.utime(segment, (two_days_ago, two_days_ago))
    recent = _cli("export", "--domain", "aussen", "--data-dir", str(data), "--since", "1d")
    assert _numbers(recent.stdout) == [5, 6, 7]
    bad = _cli("export", "--domain", "aussen", "--data-dir", str(data), "--since", "soon")
    assert bad.returncode == 2 and b"--since" in bad.stderr
