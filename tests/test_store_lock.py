"""A domain file locked by another process (an outside tool following the flock protocol)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from testing import ServerProcess

from .conftest import TOKEN
from .store_checks import lock_held_by_another_process, metric, stored_events

LOCK_TIMEOUT = 3.0


def _post(url: str, domain: str, body: dict[str, object], key: str | None = None) -> httpx.Response:
    headers = {"X-Auth": TOKEN}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{url}/v1/ingest?domain={domain}", json=body, headers=headers, timeout=60)


@pytest.mark.slow
def test_lock_held_past_timeout_is_503_file_unchanged_other_domain_unaffected(
    tmp_path: Path,
) -> None:
    env = {"LEITSTAND_LOCK_TIMEOUT": str(LOCK_TIMEOUT)}
    with ServerProcess(tmp_path / "data", token=TOKEN, env=env) as server:
        assert _post(server.url, "locked", {"n": 0}).status_code == 202
        path = server.data_dir / "locked.jsonl"
        before = path.read_bytes()

        with lock_held_by_another_process(path) as holder, ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            blocked = pool.submit(_post, server.url, "locked", {"n": 1}, "retry-me")
            other = _post(server.url, "free", {"n": 1})
            other_done = time.monotonic() - started
            # The other domain was answered while the locked request was still waiting.
            assert other.status_code == 202, other.text
            assert not blocked.done() and holder.poll() is None
            answer = blocked.result(timeout=60)
            waited = time.monotonic() - started
            assert path.read_bytes() == before  # nothing written, nothing truncated

        assert answer.status_code == 503, answer.text
        assert answer.json() == {"detail": "lock timeout"}
        assert int(answer.headers["Retry-After"]) >= 1
        assert other_done < LOCK_TIMEOUT <= waited + 0.05

        # Released: the client's retry lands exactly once, a second retry is a replay.
        retry = _post(server.url, "locked", {"n": 1}, "retry-me")
        assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers
        again = _post(server.url, "locked", {"n": 1}, "retry-me")
        assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert [e["n"] for e in stored_events(path)] == [0, 1]

        text = httpx.get(server.url + "/metrics", timeout=10).text
        assert metric(text, "leitstand_lock_wait_seconds_sum") >= LOCK_TIMEOUT - 0.05
        assert metric(text, 'leitstand_rejections_total{reason="lock_timeout"}') == 1


@pytest.mark.anyio
async def test_lock_released_before_timeout_request_succeeds_in_process(
    make_client, data_dir: Path
) -> None:
    """The poll loop picks the lock up once the holder lets go (in-process app, real holder)."""
    client = make_client(lock_timeout=20)
    assert (await client.post("/v1/ingest?domain=wait", json={"n": 0})).status_code == 202
    path = data_dir / "wait.jsonl"
    with lock_held_by_another_process(path):
        request = asyncio.create_task(client.post("/v1/ingest?domain=wait", json={"n": 1}))
        done, _ = await asyncio.wait({request}, timeout=0.3)
        assert not done  # still waiting for the lock
    response = await asyncio.wait_for(request, timeout=20)
    assert response.status_code == 202
    assert [e["n"] for e in stored_events(path)] == [0, 1]


@pytest.mark.anyio
async def test_a_wait_that_outlived_its_request_lets_go_of_the_lock(
    make_client, data_dir: Path
) -> None:
    """The 503'd request's lock wait ends when the holder lets go; with nobody left to serve it
    must release the lock at once, so that an outside tool can take it again."""
    client = make_client(lock_timeout=0.3)
    assert (await client.post("/v1/ingest?domain=w", json={"n": 0})).status_code == 202
    path = data_dir / "w.jsonl"
    with lock_held_by_another_process(path):
        answer = await client.post("/v1/ingest?domain=w", json={"n": 1})
        assert answer.status_code == 503
    # The leftover wait has the lock for a moment at most: a second outside holder gets it
    # (taken from a thread, so that this event loop can run the release meanwhile).
    def take_and_release() -> None:
        with lock_held_by_another_process(path, timeout=10):
            pass

    await asyncio.to_thread(take_and_release)
    assert (await client.post("/v1/ingest?domain=w", json={"n": 2})).status_code == 202
    assert [e["n"] for e in stored_events(path)] == [0, 2]
