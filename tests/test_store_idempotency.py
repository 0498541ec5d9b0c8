"""Idempotency-Key: a retry is stored once, also across restarts and crashes. The intent log is
exercised directly to simulate a writer that died between the intent and the data."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.metrics import Metrics
from leitstand.store import Idempotency, JsonlStore, StoreOptions
from leitstand.store.intents import Group, Intent, IntentLog
from testing import ServerProcess

from .conftest import TOKEN
from .store_checks import metric, stored_events

pytestmark = pytest.mark.anyio

BODY = [{"n": 1}, {"n": 2}]


async def test_retry_with_same_key_is_stored_once_and_replayed(client, data_dir) -> None:
    first = await client.post("/v1/ingest?domain=idem", json=BODY,
                              headers={"Idempotency-Key": "k"})
    again = await client.post("/v1/ingest?domain=idem", json=BODY,
                              headers={"Idempotency-Key": "k"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() == {"status": "accepted", "accepted": 2, "domain": "idem"}
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(stored_events(data_dir / "idem.jsonl")) == 2
    text = client.app.state.service.metrics.render().decode()
    assert metric(text, "leitstand_idempotent_replays_total") == 1


async def test_same_key_other_body_is_422_and_writes_nothing(client, data_dir) -> None:
    assert (await client.post("/v1/ingest?domain=idem", json=BODY,
                              headers={"Idempotency-Key": "k"})).status_code == 202
    other = await client.post("/v1/ingest?domain=idem", json=[{"n": 3}],
                              headers={"Idempotency-Key": "k"})
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    assert len(stored_events(data_dir / "idem.jsonl")) == 2


async def test_concurrent_duplicates_store_once_and_get_the_same_answer(client, data_dir) -> None:
    answers = await asyncio.gather(*(
        client.post("/v1/ingest?domain=idem", json=BODY, headers={"Idempotency-Key": "dup"})
        for _ in range(20)
    ))
    assert {a.status_code for a in answers} == {202}
    assert {a.text for a in answers} == {answers[0].text}
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 19
    assert len(stored_events(data_dir / "idem.jsonl")) == 2


async def test_concurrent_same_key_other_body_is_422(client, data_dir) -> None:
    answers = await asyncio.gather(
        client.post("/v1/ingest?domain=idem", json=BODY, headers={"Idempotency-Key": "x"}),
        client.post("/v1/ingest?domain=idem", json=[{"n": 9}], headers={"Idempotency-Key": "x"}),
    )
    assert sorted(a.status_code for a in answers) == [202, 422]
    assert len(stored_events(data_dir / "idem.jsonl")) in (1, 2)


async def test_key_in_a_second_store_on_the_same_files_is_replayed(make_client, data_dir) -> None:
    """Two apps on one data dir (as two workers would be): the second sees the first's key."""
    a, b = make_client(), make_client()
    assert (await a.post("/v1/ingest?domain=idem", json=BODY,
                         headers={"Idempotency-Key": "k"})).status_code == 202
    replay = await b.post("/v1/ingest?domain=idem", json=BODY, headers={"Idempotency-Key": "k"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (await b.post("/v1/ingest?domain=idem", json=[{"n": 0}],
                         headers={"Idempotency-Key": "k"})).status_code == 422
    assert len(stored_events(data_dir / "idem.jsonl")) == 2


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill9"])
def test_key_survives_a_restart_of_the_real_server(tmp_path: Path, crash: bool) -> None:
    data = tmp_path / "data"
    headers = {"X-Auth": TOKEN, "Idempotency-Key": "across-restart"}
    for attempt in range(2):
        server = ServerProcess(data, token=TOKEN, log_path=tmp_path / f"server-{attempt}.log")
        try:
            server.start()
            answer = httpx.post(server.url + "/v1/ingest?domain=idem", json=BODY,
                                headers=headers, timeout=30)
            assert answer.status_code == 202, answer.text
            assert (answer.headers.get("Idempotent-Replayed") == "true") == (attempt == 1)
            if crash:
                server.kill9()
        finally:
            server.stop()
    assert len(stored_events(data / "idem.jsonl")) == 2


# -- the intent log, with a writer that died at each point ------------------------------------
def _store(data: Path, **options: object) -> tuple[JsonlStore, Metrics]:
    metrics = Metrics()
    return JsonlStore(data, metrics, StoreOptions(**options)), metrics  # type: ignore[arg-type]


def _lines(n: int, first: int = 0) -> list[bytes]:
    return [orjson.dumps({"n": i, "domain": "crash"}) + b"\n" for i in range(first, first + n)]


def _dead_writer(data: Path, lines: list[bytes], key: str, landed: int) -> bytes:
    """What a writer that logged its intent for `lines` under `key` and died after putting
    `landed` bytes of them into the data file leaves behind. Returns the data before."""
    path = data / "crash.jsonl"
    before = path.read_bytes() if path.exists() else b""
    payload = b"".join(lines)
    helper = os.open(data / ".leitstand", os.O_RDONLY | os.O_DIRECTORY)
    try:
        log = IntentLog("crash.idem", helper, window=86_400, max_keys=100)
        log.catch_up()
        fingerprint = Idempotency.for_lines(key, lines).fingerprint
        intent = Intent(key, fingerprint, len(before), len(payload),
                        hashlib.sha256(payload).hexdigest(), len(lines))
        ino = os.stat(path).st_ino
        log.begin(Group(ino, len(before), len(before) + len(payload), time.time(), [intent]),
                  fsync=False)
        log.close()
    finally:
        os.close(helper)
    with path.open("ab") as f:
        f.write(payload[:landed])
    return before


async def _seed(data: Path) -> None:
    store, _ = _store(data)
    await store.append("crash", _lines(2, 100))
    await store.close()


async def test_intent_whose_data_never_landed_is_void_and_the_retry_writes_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    await _seed(data)
    lines = _lines(3)
    before = _dead_writer(data, lines, "k", landed=0)
    store, _ = _store(data)
    try:
        result = await store.append("crash", lines, Idempotency.for_lines("k", lines))
        assert not result.replayed and result.accepted == 3
        again = await store.append("crash", lines, Idempotency.for_lines("k", lines))
        assert again.replayed
    finally:
        await store.close()
    assert (data / "crash.jsonl").read_bytes() == before + b"".join(lines)


async def test_torn_group_is_cut_whole_at_start_and_the_retry_writes_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "data"
    await _seed(data)
    lines = _lines(3)
    payload = b"".join(lines)
    landed = len(lines[0]) + len(lines[1]) // 2  # one whole line and half of the next
    before = _dead_writer(data, lines, "k", landed=landed)
    store, metrics = _store(data)  # the start repairs it
    try:
        assert (data / "crash.jsonl").read_bytes() == before  # whole lines of the batch too
        quarantine = (data / ".leitstand" / "crash.quarantine").read_bytes()
        assert quarantine == payload[:landed] + b"\n"
        assert metric(metrics.render().decode(), "leitstand_repairs_total") == 1
        assert "repaired crash.jsonl" in caplog.text
        result = await store.append("crash", lines, Idempotency.for_lines("k", lines))
        assert not result.replayed
    finally:
        await store.close()
    assert (data / "crash.jsonl").read_bytes() == before + payload


async def test_group_that_landed_whole_before_the_crash_is_replayed(tmp_path: Path) -> None:
    """The writer died after the data was written but before it answered: the retry must not
    store the batch a second time."""
    data = tmp_path / "data"
    await _seed(data)
    lines = _lines(3)
    before = _dead_writer(data, lines, "k", landed=len(b"".join(lines)))
    store, _ = _store(data)
    try:
        result = await store.append("crash", lines, Idempotency.for_lines("k", lines))
        assert result.replayed and result.accepted == 3
    finally:
        await store.close()
    assert (data / "crash.jsonl").read_bytes() == before + b"".join(lines)


async def test_torn_group_left_by_a_dead_worker_is_cut_by_a_running_one(tmp_path: Path) -> None:
    """A store that is already running (another worker) resolves the dead writer's group at its
    next append, under the lock."""
    data = tmp_path / "data"
    await _seed(data)
    store, metrics = _store(data)
    try:
        await store.append("crash", _lines(1, 200))
        lines = _lines(3)
        before = _dead_writer(data, lines, "k", landed=len(lines[0]))  # a whole line only
        await store.append("crash", _lines(1, 300))
        retry = await store.append("crash", lines, Idempotency.for_lines("k", lines))
        assert not retry.replayed
        assert metric(metrics.render().decode(), "leitstand_repairs_total") == 1
    finally:
        await store.close()
    assert (data / "crash.jsonl").read_bytes() == before + b"".join(_lines(1, 300) + lines)


async def test_expired_and_evicted_keys_are_written_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store, _ = _store(data, idempotency_max_keys=3, fsync=False)
    try:
        for key in "abcd":
            await store.append("keys", _lines(1), Idempotency.for_lines(key, _lines(1)))
        assert (await store.append("keys", _lines(1), Idempotency.for_lines("d", _lines(1)))
                ).replayed
        # "a" fell out of the bounded memory: its retry is stored again (documented bound).
        assert not (await store.append("keys", _lines(1), Idempotency.for_lines("a", _lines(1)))
                    ).replayed
    finally:
        await store.close()
    store, _ = _store(data, idempotency_window=0.001, fsync=False)
    try:  # a window of a millisecond: every record in the log is older than that
        assert not (await store.append("keys", _lines(1), Idempotency.for_lines("d", _lines(1)))
                    ).replayed
    finally:
        await store.close()


async def test_log_is_compacted_and_keys_survive_it_and_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log_path = data / ".leitstand" / "many.idem"
    store, _ = _store(data, idempotency_max_keys=50, fsync=False)
    try:
        sizes = []
        for i in range(700):  # two log lines per group: compaction is due after ~600 groups
            await store.append("many", _lines(1, i), Idempotency.for_lines(f"k{i}", _lines(1, i)))
            sizes.append(log_path.stat().st_size)
        assert any(b < a for a, b in itertools.pairwise(sizes)), "never compacted"
    finally:
        await store.close()
    store, _ = _store(data, idempotency_max_keys=50, fsync=False)
    try:
        assert (await store.append("many", _lines(1, 699),
                                   Idempotency.for_lines("k699", _lines(1, 699)))).replayed
    finally:
        await store.close()
    assert len(stored_events(data / "many.jsonl")) == 700
