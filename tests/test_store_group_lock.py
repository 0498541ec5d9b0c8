"""Group commit while the domain's flock is held elsewhere (another worker, an outside tool):
the group is formed once the lock is taken, so every request that arrived during the wait joins
it; only requests that waited `lock_timeout` get 503."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from leitstand.errors import LockTimeout
from leitstand.metrics import Metrics
from leitstand.store import JsonlStore, StoreOptions

from .store_checks import lock_held_by_another_process, stored_events

pytestmark = pytest.mark.anyio

WAIT = 30.0  # bound on every wait below; nothing here is timed


def _group_sizes(metrics: Metrics) -> tuple[float, float]:
    """(groups committed, requests in them) from `leitstand_commit_group_requests`."""
    count = metrics.registry.get_sample_value("leitstand_commit_group_requests_count")
    total = metrics.registry.get_sample_value("leitstand_commit_group_requests_sum")
    return count or 0.0, total or 0.0


async def _until(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.01)


def _lock_wait_running(name: str) -> bool:
    return any(t.name == f"leitstand-lock-{name}" for t in threading.enumerate())


async def test_requests_arriving_during_a_lock_wait_are_committed_in_one_group(
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    store = JsonlStore(tmp_path / "data", metrics, StoreOptions(lock_timeout=WAIT))
    path = tmp_path / "data" / "d.jsonl"
    try:
        await store.append("d", [b'{"n":0}\n'])
        assert _group_sizes(metrics) == (1, 1)
        with lock_held_by_another_process(path):
            first = asyncio.ensure_future(store.append("d", [b'{"n":1}\n']))
            # The first request's group waits for the lock in its waiter thread ...
            await _until(lambda: _lock_wait_running("d.jsonl"), "the lock wait to start")
            # ... while more requests arrive.
            later = [asyncio.ensure_future(store.append("d", [b'{"n":%d}\n' % n]))
                     for n in range(2, 11)]
            for _ in range(5):
                await asyncio.sleep(0)
            assert not first.done() and not any(t.done() for t in later)
        results = await asyncio.wait_for(asyncio.gather(first, *later), WAIT)
        assert [r.accepted for r in results] == [1] * 10
        # One group of 10 (before: the first request alone, then the other 9).
        assert _group_sizes(metrics) == (2, 11)
        assert sorted(e["n"] for e in stored_events(path)) == list(range(11))
    finally:
        await store.close()


async def test_only_requests_that_waited_lock_timeout_get_503(tmp_path: Path) -> None:
    """The deadline comes from the oldest waiting request; one that arrived later keeps
    waiting in the same lock wait and is stored once the holder lets go."""
    timeout = 3.0
    metrics = Metrics()
    store = JsonlStore(tmp_path / "data", metrics, StoreOptions(lock_timeout=timeout))
    path = tmp_path / "data" / "d.jsonl"
    try:
        await store.append("d", [b'{"n":0}\n'])
        with lock_held_by_another_process(path):
            early = asyncio.ensure_future(store.append("d", [b'{"n":1}\n']))
            await _until(lambda: _lock_wait_running("d.jsonl"), "the lock wait to start")
            await asyncio.sleep(timeout / 2)  # half the timeout later (a margin, not a check)
            late = asyncio.ensure_future(store.append("d", [b'{"n":2}\n']))
            with pytest.raises(LockTimeout) as raised:
                await asyncio.wait_for(early, WAIT)
            assert raised.value.headers == {"Retry-After": "3"}
            assert not late.done()
        assert (await asyncio.wait_for(late, WAIT)).accepted == 1
        assert [e["n"] for e in stored_events(path)] == [0, 2]
        assert _group_sizes(metrics) == (2, 2)
    finally:
        await store.close()
