"""Crash repair: a torn trailing line (an outside writer died mid-line) is cut into the
quarantine file, counted and logged; later appends are clean; readers only see whole lines."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from leitstand.metrics import Metrics
from leitstand.store import JsonlStore, StoreOptions
from testing import ServerProcess

from .conftest import TOKEN
from .store_checks import lock_held_by_another_process, metric, stored_events

TORN = b'{"id": "torn", "half": "of a li'


def _post(server: ServerProcess, n: int) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/ingest?domain=torn", json={"n": n},
                      headers={"X-Auth": TOKEN}, timeout=30)


def test_torn_line_from_an_outside_writer_is_cut_quarantined_counted_logged(
    tmp_path: Path,
) -> None:
    with ServerProcess(tmp_path / "data", token=TOKEN) as server:
        assert _post(server, 1).status_code == 202
        path = server.data_dir / "torn.jsonl"
        with path.open("ab") as f:  # an outside tool that died half way through its line
            f.write(TORN)
        assert _post(server, 2).status_code == 202
        assert _post(server, 3).status_code == 202
        assert [e["n"] for e in stored_events(path)] == [1, 2, 3]  # clean, whole lines
        quarantine = server.data_dir / ".leitstand" / "torn.quarantine"
        assert quarantine.read_bytes() == TORN + b"\n"
        text = httpx.get(server.url + "/metrics", timeout=10).text
        assert metric(text, "leitstand_repairs_total") == 1
        log = server.log()
    assert "repaired torn.jsonl: cut a torn trailing line of 31 bytes" in log


def test_torn_line_is_repaired_when_the_service_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "torn.jsonl").write_bytes(b'{"n":0,"domain":"torn"}\n' + TORN)
    with ServerProcess(data, token=TOKEN) as server:
        # Before any write: the start has already cut the tail.
        assert (data / "torn.jsonl").read_bytes() == b'{"n":0,"domain":"torn"}\n'
        assert (data / ".leitstand" / "torn.quarantine").read_bytes() == TORN + b"\n"
        text = httpx.get(server.url + "/metrics", timeout=10).text
        assert metric(text, "leitstand_repairs_total") == 1


@pytest.mark.anyio
async def test_readers_never_see_a_partial_line(tmp_path: Path) -> None:
    """While a writer holds the lock mid-line (so nobody may repair it), reads end at the
    last whole line, and resume past it once the line is complete."""
    data = tmp_path / "data"
    store = JsonlStore(data, Metrics(), StoreOptions(lock_timeout=5))
    try:
        await store.append("torn", [b'{"n":1,"domain":"torn"}\n'])
        path = data / "torn.jsonl"
        with lock_held_by_another_process(path):
            with path.open("ab") as f:
                f.write(b'{"n":2,"dom')
            batch = await store.read("torn")
            assert [line.rstrip(b"\n") for line in batch.lines] == [b'{"n":1,"domain":"torn"}']
            with path.open("ab") as f:
                f.write(b'ain":"torn"}\n')
        rest = await store.read("torn", cursor=batch.next_cursor)
        assert [line.rstrip(b"\n") for line in rest.lines] == [b'{"n":2,"domain":"torn"}']
    finally:
        await store.close()
