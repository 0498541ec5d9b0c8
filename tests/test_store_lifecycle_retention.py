"""Retention with a real server and real files: by bytes and by age only the oldest segments are
deleted (what is left is a tail of everything written, in order, and the active file is never
touched), and a cursor into a deleted segment gets 410 with the reason and a cursor to the
oldest retained line."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from testing import UNLIMITED, ServerProcess

from .conftest import TOKEN
from .lifecycle_checks import all_lines, segment_paths

BASE_ENV = {
    "LEITSTAND_ROTATE_BYTES": "1KiB",
    "LEITSTAND_MIN_FREE_BYTES": "0",
    "LEITSTAND_READ_RATE_LIMIT": UNLIMITED,
}


def _write(http: httpx.Client, first: int, count: int) -> list[int]:
    for n in range(first, first + count):
        body = orjson.dumps({"n": n, "pad": "r" * 60})
        assert http.post("/v1/ingest?domain=alt", content=body,
                         headers={"Content-Type": "application/json"}).status_code == 202
    return list(range(first, first + count))


def _stored(data: Path) -> list[int]:
    return [orjson.loads(line)["n"] for line in all_lines(data, "alt")]


def _page_all(http: httpx.Client, cursor: str | None) -> list[int]:
    numbers: list[int] = []
    while True:
        params = {"domain": "alt", "limit": "7", **({"cursor": cursor} if cursor else {})}
        answer = http.get("/v1/events", params=params)
        assert answer.status_code == 200, answer.text
        if not answer.content:
            return numbers
        numbers += [orjson.loads(line)["n"] for line in answer.content.splitlines()]
        cursor = answer.headers["X-Next-Cursor"]


def _wait(check, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def _segment_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in segment_paths(data, "alt"))


@pytest.mark.slow
def test_retention_by_bytes_deletes_the_oldest_and_old_cursors_get_410(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**BASE_ENV, "LEITSTAND_COMPRESS": "none", "LEITSTAND_RETAIN_BYTES": "5KiB"}
    with ServerProcess(data, token=TOKEN, env=env, log_path=tmp_path / "server.log") as server, \
            httpx.Client(base_url=server.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
        written = _write(http, 0, 3)
        early = http.get("/v1/events", params={"domain": "alt", "limit": "1"})
        old_cursor = early.headers["X-Next-Cursor"]  # inside the first file
        written += _write(http, 3, 300)
        _wait(lambda: _segment_bytes(data) <= 5 * 1024, "retention to delete segments")
        stored = _stored(data)
        assert stored == written[-len(stored):]  # a tail: only the oldest were deleted
        assert len(stored) < len(written)
        seqs = [int(p.name.split("-")[1].split(".")[0]) for p in segment_paths(data, "alt")]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the newest, no gaps
        assert (data / "alt.jsonl").exists()  # the active file is never deleted

        gone = http.get("/v1/events", params={"domain": "alt", "cursor": old_cursor})
        assert gone.status_code == 410, gone.text
        body = gone.json()
        assert "retention" in body["detail"]
        assert gone.headers["X-Next-Cursor"] == body["next_cursor"]
        assert _page_all(http, body["next_cursor"]) == stored  # from the oldest retained line
        assert _page_all(http, None) == stored
        metrics = http.get("/metrics").text
        assert 'leitstand_retention_deletions_total{domain="alt"}' in metrics


@pytest.mark.slow
def test_retention_by_age_deletes_only_segments_older_than_the_age(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**BASE_ENV, "LEITSTAND_COMPRESS": "zstd", "LEITSTAND_RETAIN_AGE": "3s"}
    with ServerProcess(data, token=TOKEN, env=env, log_path=tmp_path / "server.log") as server, \
            httpx.Client(base_url=server.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
        old = _write(http, 0, 100)
        _wait(lambda: len(segment_paths(data, "alt")) >= 5, "segments of the first batch")
        time.sleep(3.5)  # the first batch's segments are older than the age now
        young = _write(http, 100, 100)  # its rotations wake the upkeep
        _wait(lambda: _stored(data)[0] != 0, "the old segments to go")
        stored = _stored(data)
        assert stored == (old + young)[-len(stored):]  # a tail: only the oldest went
        assert set(young) <= set(stored)  # nothing younger than the age was deleted
        assert _page_all(http, None) == stored
