"""Rotation with zstd under load, with real processes and real files: 2 workers and 32 clients
write to 3 domains (one of them a 253-character domain whose files are named with a hash) with
`LEITSTAND_ROTATE_BYTES=65536`, while one reader pages `/v1/events` from the start and another
follows `/v1/stream`. Afterwards every acknowledged event is in the files exactly once (segments
decompressed), both readers saw every line once and in the files' order, no name is longer than
255 bytes, and `leitstand export` prints exactly the files' lines.

`LEITSTAND_TEST_LIFECYCLE_EVENTS` sets the number of events (default 200,000, the issue's
number)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.domains import file_stem
from testing import ROOT, UNLIMITED, ServerProcess

from .conftest import TOKEN
from .lifecycle_checks import all_lines, segment_paths

EVENTS = int(os.environ.get("LEITSTAND_TEST_LIFECYCLE_EVENTS", "200000"))
CLIENTS = 32
BATCH = 100
LONG = ".".join(["l" * 63, "o" * 63, "n" * 63, "g" * 61])  # 253 characters
DOMAINS = ("garten", "keller", LONG)
WATCHED = "garten"  # the domain both readers follow
DEADLINE = 600.0
ENV = {
    "LEITSTAND_ROTATE_BYTES": "64KiB",
    "LEITSTAND_COMPRESS": "zstd",
    "LEITSTAND_READ_RATE_LIMIT": UNLIMITED,
    "LEITSTAND_MIN_FREE_BYTES": "0",
}


async def _write(url: str, acked: dict[str, set[tuple[int, int]]]) -> None:
    per_client = EVENTS // CLIENTS
    headers = {"X-Auth": TOKEN, "Content-Type": "application/x-ndjson"}
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:

        async def client(c: int) -> None:
            for first in range(0, per_client, BATCH):
                domain = DOMAINS[(c + first // BATCH) % len(DOMAINS)]
                ids = [(c, i) for i in range(first, min(first + BATCH, per_client))]
                body = b"".join(orjson.dumps({"c": c, "i": i}) + b"\n" for c, i in ids)
                answer = await http.post("/v1/ingest", params={"domain": domain}, content=body,
                                         headers={"Idempotency-Key": f"{c}-{first}"})
                assert answer.status_code == 202, answer.text
                acked[domain].update(ids)

        await asyncio.gather(*(client(c) for c in range(CLIENTS)))


def _page_from_start(url: str, done: threading.Event, out: list[bytes]) -> None:
    """Page /v1/events from the start until the writers are done and a page comes back empty."""
    cursor = None
    with httpx.Client(base_url=url, headers={"X-Auth": TOKEN}, timeout=60) as http:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            params = {"domain": WATCHED, "limit": "1000", **({"cursor": cursor} if cursor else {})}
            answer = http.get("/v1/events", params=params)
            if answer.status_code == 404:  # nothing written yet
                time.sleep(0.05)
                continue
            assert answer.status_code == 200, answer.text
            lines = answer.content.splitlines(keepends=True)
            out.extend(lines)
            cursor = answer.headers["X-Next-Cursor"]
            if not lines:
                if done.is_set():
                    return
                time.sleep(0.05)


def _follow_stream(url: str, expected: threading.Event, count: list[int],
                   out: list[bytes]) -> None:
    """Follow /v1/stream from the first line until `count[0]` lines arrived."""
    with httpx.Client(base_url=url, headers={"X-Auth": TOKEN}, timeout=60) as http:
        while True:  # the domain exists once the first batch is stored
            answer = http.get("/v1/events", params={"domain": WATCHED, "limit": "1"})
            if answer.status_code == 200 and answer.content:
                break
            time.sleep(0.05)
        first = answer.content
        out.append(first)
        start = answer.headers["X-Next-Cursor"]
        with http.stream("GET", "/v1/stream", params={"domain": WATCHED, "cursor": start}) as sse:
            for line in sse.iter_lines():
                if line.startswith("data: "):
                    out.append(line[6:].encode() + b"\n")
                if expected.is_set() and len(out) >= count[0]:
                    return


@pytest.mark.slow
def test_rotation_with_zstd_under_load_keeps_every_event_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, token=TOKEN, workers=2, env=ENV,
                           log_path=tmp_path / "server.log")
    acked: dict[str, set[tuple[int, int]]] = {d: set() for d in DOMAINS}
    paged: list[bytes] = []
    streamed: list[bytes] = []
    done, expected, count = threading.Event(), threading.Event(), [0]
    with server:
        pager = threading.Thread(target=_page_from_start, args=(server.url, done, paged))
        follower = threading.Thread(target=_follow_stream,
                                    args=(server.url, expected, count, streamed), daemon=True)
        pager.start()
        follower.start()
        started = time.monotonic()
        try:
            asyncio.run(_write(server.url, acked))
        finally:
            done.set()
        written = time.monotonic() - started
        pager.join(DEADLINE)
        assert not pager.is_alive(), "the paging reader did not finish"
        count[0] = len(acked[WATCHED])
        expected.set()
        follower.join(DEADLINE)
        assert not follower.is_alive(), f"the stream delivered {len(streamed)} of {count[0]}"
        _wait_until_compressed(data, DEADLINE)
    print(f"{sum(map(len, acked.values()))} events in {written:.1f}s; "
          f"{sum(len(segment_paths(data, d)) for d in DOMAINS)} segments")

    for domain in DOMAINS:
        lines = all_lines(data, domain)
        events = [orjson.loads(line) for line in lines]
        ids = [(e["c"], e["i"]) for e in events]
        assert len(ids) == len(set(ids)), f"{domain}: an event is stored twice"
        assert set(ids) == acked[domain], f"{domain}: stored != acknowledged"
        assert all(e["domain"] == domain for e in events)
        assert len(segment_paths(data, domain)) >= 2
        exported = subprocess.run(
            [sys.executable, "-m", "leitstand.cli", "export", "--domain", domain,
             "--data-dir", str(data)], cwd=ROOT, capture_output=True, timeout=300, check=True)
        assert exported.stdout == b"".join(lines), f"{domain}: export differs from the files"
    watched = all_lines(data, WATCHED)
    assert paged == watched  # every line once, in order, across every segment
    assert streamed == watched
    for root, dirs, files in os.walk(data):
        for name in dirs + files:
            assert len(name.encode()) <= 255, (root, name)
    assert (data / "archive" / file_stem(LONG)).is_dir()


def _wait_until_compressed(data: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while any(not p.name.endswith(".zst") for d in DOMAINS for p in segment_paths(data, d)):
        assert time.monotonic() < end, "segments were not compressed in time"
        time.sleep(0.2)
