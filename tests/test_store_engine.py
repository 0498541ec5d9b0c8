"""The store's metrics, group commit, LEITSTAND_FSYNC=off, and refusing symlinks."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from leitstand.metrics import Metrics
from leitstand.store import Idempotency, JsonlStore, StoreOptions

from .store_checks import metric, stored_events

pytestmark = pytest.mark.anyio


async def test_metrics_show_group_size_fsync_lock_wait_repairs_and_replays(
    client, data_dir: Path,
) -> None:
    answers = await asyncio.gather(*(
        client.post("/v1/ingest?domain=m", json={"n": n}) for n in range(40)
    ))
    assert {a.status_code for a in answers} == {202}
    with (data_dir / "m.jsonl").open("ab") as f:
        f.write(b'{"torn')
    for _ in range(2):
        await client.post("/v1/ingest?domain=m", json={"n": 40}, headers={"Idempotency-Key": "k"})
    response = await client.get("/metrics")
    text = response.text
    groups = metric(text, "leitstand_commit_group_requests_count")
    # 42 requests (one of them a replay of the other) in fewer groups: commits were shared.
    assert metric(text, "leitstand_commit_group_requests_sum") == 42
    assert 3 <= groups < 42
    assert metric(text, 'leitstand_commit_group_requests_bucket{le="1.0"}') < groups
    assert metric(text, "leitstand_fsync_seconds_count") == groups - 1  # the replay writes none
    assert metric(text, "leitstand_lock_wait_seconds_count") == groups
    assert metric(text, "leitstand_repairs_total") == 1
    assert metric(text, "leitstand_idempotent_replays_total") == 1
    assert metric(text, 'leitstand_events_total{domain="m"}') == 41
    assert len(stored_events(data_dir / "m.jsonl")) == 41


async def test_fsync_off_stores_without_fsync(make_client, data_dir: Path) -> None:
    client = make_client(fsync="off")
    for n in range(3):
        assert (await client.post("/v1/ingest?domain=fast", json={"n": n},
                                  headers={"Idempotency-Key": f"k{n}"})).status_code == 202
    text = (await client.get("/metrics")).text
    assert metric(text, "leitstand_fsync_seconds_count") == 0
    assert [e["n"] for e in stored_events(data_dir / "fast.jsonl")] == [0, 1, 2]


async def test_symlinked_data_file_is_refused_and_its_target_untouched(
    client, data_dir: Path, tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious\n")
    data_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(target, data_dir / "evil.jsonl")
    answer = await client.post("/v1/ingest?domain=evil", json={"n": 1})
    assert answer.status_code == 500
    assert "symbolic link" in answer.json()["detail"]
    assert target.read_bytes() == b"precious\n"


async def test_data_file_that_is_a_directory_is_refused(client, data_dir: Path) -> None:
    (data_dir / "dir.jsonl").mkdir(parents=True)
    answer = await client.post("/v1/ingest?domain=dir", json={"n": 1})
    assert answer.status_code == 500
    assert "directory" in answer.json()["detail"]
    assert (data_dir / "dir.jsonl").is_dir()


def test_symlinked_helper_dir_is_refused_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", data / ".leitstand")
    with pytest.raises(RuntimeError, match="not a directory"):
        JsonlStore(data, Metrics(), StoreOptions())


async def test_a_new_file_is_created_0600_and_the_next_start_reuses_it(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"  # created by the store, parents too
    store = JsonlStore(data, Metrics(), StoreOptions())
    try:
        await store.append("new", [b'{"n":1}\n'])
    finally:
        await store.close()
    assert (data / "new.jsonl").stat().st_mode & 0o777 == 0o600
    store = JsonlStore(data, Metrics(), StoreOptions())
    try:
        await store.append("new", [b'{"n":2}\n'])
    finally:
        await store.close()
    assert (data / "new.jsonl").read_bytes() == b'{"n":1}\n{"n":2}\n'


async def test_open_files_stay_bounded_with_many_domains(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = JsonlStore(data, Metrics(), StoreOptions(max_open_domains=8, fsync=False))
    line = [b'{"n":1}\n']
    try:
        fds_before = len(os.listdir("/proc/self/fd"))
        await store.append("d0", line, Idempotency.for_lines("k", line))
        for n in range(1, 60):
            await store.append(f"d{n}", line, Idempotency.for_lines("k", line))
        assert len(os.listdir("/proc/self/fd")) - fds_before <= 2 * 8
        # d0 was closed long ago: reopened, its intent log read again, the key still known.
        assert (await store.append("d0", line, Idempotency.for_lines("k", line))).replayed
    finally:
        await store.close()
    assert all((data / f"d{n}.jsonl").read_bytes() == line[0] for n in range(60))
