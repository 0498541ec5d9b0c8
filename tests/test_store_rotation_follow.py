"""A writer whose file another process rotated away (another worker, `leitstand rotate`)
follows the name without polling: it waits for the new file's lock in its lock thread, which
the kernel wakes, and never waits for the lock of the closed segment (which the compressor
holds while it compresses)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from leitstand.metrics import Metrics
from leitstand.store import JsonlStore, StoreOptions
from leitstand.store.rotation import RotationPolicy
from testing import ROOT

from .store_checks import lock_held_by_another_process, stored_events

pytestmark = pytest.mark.anyio

WAIT = 30.0  # bound on every wait below; nothing here is timed


def _store(data: Path) -> JsonlStore:
    # Rotation on (so the upkeep thread runs too), but never due in these tests.
    options = StoreOptions(lock_timeout=WAIT, rotation=RotationPolicy(max_bytes=1 << 30))
    return JsonlStore(data, Metrics(), options)


def _rotate_in_another_process(data: Path, domain: str) -> Path:
    done = subprocess.run([sys.executable, "-m", "leitstand.cli", "rotate", "--domain", domain,
                           "--data-dir", str(data)],
                          cwd=ROOT, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return data / done.stdout.decode().strip()


async def _until_lock_thread(name: str, task: asyncio.Future[object]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not any(t.name == f"leitstand-lock-{name}" for t in threading.enumerate()):
        assert not task.done(), task
        assert loop.time() < deadline, "the writer never waited for the new file's lock"
        await asyncio.sleep(0.01)


async def test_a_rotation_by_another_process_is_followed_by_waiting_for_the_new_lock(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    store = _store(data)
    try:
        await store.append("d", [b'{"n":0}\n'])  # this writer's file is now the one rotated
        segment = _rotate_in_another_process(data, "d")
        with lock_held_by_another_process(data / "d.jsonl"):  # the new active file
            late = asyncio.ensure_future(store.append("d", [b'{"n":1}\n']))
            # Before: the I/O thread polled for the new lock every 25 ms, losing every race
            # against a worker committing back to back (seconds of p99 with 2 workers).
            await _until_lock_thread("d.jsonl", late)
        assert (await asyncio.wait_for(late, WAIT)).accepted == 1
    finally:
        await store.close()
    assert [e["n"] for e in stored_events(segment)] == [0]
    assert [e["n"] for e in stored_events(data / "d.jsonl")] == [1]


async def test_a_closed_segment_locked_by_its_compressor_does_not_hold_up_the_writer(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    store = _store(data)
    try:
        await store.append("d", [b'{"n":0}\n'])
        segment = _rotate_in_another_process(data, "d")
        # The compressor holds a raw segment's lock for as long as it compresses (compress.py).
        with lock_held_by_another_process(segment):
            # Before: the writer waited for that lock (its file was the segment now).
            answer = await asyncio.wait_for(store.append("d", [b'{"n":1}\n']), 2 * WAIT)
            assert answer.accepted == 1
    finally:
        await store.close()
    assert [e["n"] for e in stored_events(segment)] == [0]
    assert [e["n"] for e in stored_events(data / "d.jsonl")] == [1]
