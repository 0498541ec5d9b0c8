"""The NATS sink writes through the same rotation as the embedded store: its files rotate into
`archive/<stem>/`, compress and stay exactly once across a crash right after a rotation; and the
sink process serves its own Prometheus metrics (`LEITSTAND_SINK_METRICS_ADDRESS`)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.metrics import Metrics
from leitstand.nats.domainsink import DataDir, DomainSink
from leitstand.store.domainfile import StoreOptions
from leitstand.store.rotation import RotationPolicy
from testing import NatsCluster, SinkProcess
from testing.processes import free_port

from .lifecycle_checks import all_lines, segment_paths
from .test_nats_sink import nats_single  # noqa: F401 - the module's nats-server fixture

LINES = [b'{"event":%d,"domain":"aussen","pad":"%s"}\n' % (i, b"s" * 40) for i in range(200)]


def rotating_sink(data: Path) -> DomainSink:
    data.mkdir(parents=True, exist_ok=True)
    (data / ".leitstand").mkdir(exist_ok=True)
    dir_fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    helper_fd = os.open(data / ".leitstand", os.O_RDONLY | os.O_DIRECTORY)
    return DomainSink("aussen", dir_fd, helper_fd, fsync=True, lock_timeout=2.0,
                      metrics=Metrics(), rotation=RotationPolicy(max_bytes=1024))


def test_the_sink_rotates_and_stays_exactly_once_across_a_crash(tmp_path: Path) -> None:
    sink = rotating_sink(tmp_path)
    for seq in range(1, 101):
        assert sink.apply([(seq, LINES[seq - 1])]) == 1
    assert len(segment_paths(tmp_path, "aussen")) >= 5
    sink.close_all()  # a crash right after a rotation leaves the same files
    again = rotating_sink(tmp_path)
    # JetStream redelivers what was never acked, plus new messages: nothing twice.
    assert again.apply([(seq, LINES[seq - 1]) for seq in range(90, 121)]) == 20
    assert all_lines(tmp_path, "aussen") == LINES[:120]


def wait_for_segments(data: Path, count: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(segment_paths(data, "aussen")) < count:
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("restarted", [False, True])
def test_the_sink_rotates_an_idle_file_by_age(tmp_path: Path, restarted: bool) -> None:
    """LEITSTAND_ROTATE_AGE closes a file nobody writes to, as in the embedded store: the
    upkeep thread rotates it through the sink's writer of that domain (or, for a file this
    process has not written yet, a writer of its own), and the sequence log follows, so a
    restart writes nothing twice."""
    options = StoreOptions(rotation=RotationPolicy(max_age=1.0), compress="none",
                           upkeep_interval=0.05)
    if restarted:  # the file was written by an earlier sink, which stopped before its check
        first = DataDir(tmp_path, fsync=True, lock_timeout=2.0,
                        lifecycle=replace(options, upkeep_interval=3600.0))
        assert first.apply([(seq, "aussen", LINES[seq - 1]) for seq in (1, 2, 3)]) == 3
        first.close()
    data = DataDir(tmp_path, fsync=True, lock_timeout=2.0, lifecycle=options)
    try:
        if not restarted:
            assert data.apply([(seq, "aussen", LINES[seq - 1]) for seq in (1, 2, 3)]) == 3
        wait_for_segments(tmp_path, 1, "the idle file was not rotated by age")
        assert (tmp_path / "aussen.jsonl").stat().st_size == 0
        assert all_lines(tmp_path, "aussen") == LINES[:3]
        # JetStream redelivers 2 and 3 (never acked) with the new 4: only 4 is written.
        assert data.apply([(seq, "aussen", LINES[seq - 1]) for seq in (2, 3, 4)]) == 1
    finally:
        data.close()
    again = DataDir(tmp_path, fsync=True, lock_timeout=2.0, lifecycle=options)
    try:
        assert again.apply([(seq, "aussen", LINES[seq - 1]) for seq in (3, 4, 5)]) == 1
    finally:
        again.close()
    assert all_lines(tmp_path, "aussen") == LINES[:5]


@pytest.mark.slow
@pytest.mark.anyio
async def test_sink_process_rotates_an_idle_file_by_age(
    nats_single: NatsCluster, tmp_path: Path, make_client  # noqa: F811
) -> None:
    """Cluster mode end to end: a real sink process (LEITSTAND_ROTATE_AGE=1s) closes the file
    of a domain that gets no more events, then keeps writing the next ones exactly once, also
    after a kill -9."""
    ingest = make_client(backend="nats", nats_url=nats_single.urls, nats_stream="idle",
                         nats_replicas=1, data_dir=tmp_path / "ingest")
    data = tmp_path / "sink"
    env = {"LEITSTAND_BACKEND": "nats", "LEITSTAND_NATS_URL": nats_single.urls,
           "LEITSTAND_NATS_STREAM": "idle", "LEITSTAND_NATS_REPLICAS": "1",
           "LEITSTAND_ROTATE_AGE": "1s", "LEITSTAND_COMPRESS": "none",
           "LEITSTAND_MIN_FREE_BYTES": "0"}
    sink = SinkProcess(data, env, tmp_path / "sink.log")

    async def send(first: int, count: int) -> None:
        for n in range(first, first + count):
            answer = await ingest.post("/v1/ingest?domain=aussen", json={"n": n})
            assert answer.status_code == 202

    def rotated_away(count: int) -> bool:
        """`count` lines in all, every one of them in a closed segment."""
        active = data / "aussen.jsonl"
        return (len(all_lines(data, "aussen")) == count and active.exists()
                and active.stat().st_size == 0)

    async def wait_until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, f"{what}: {sink.log()}"
            await asyncio.sleep(0.1)

    try:
        sink.start()
        await send(0, 5)
        await wait_until(lambda: rotated_away(5), "the idle file was not rotated by age")
        sink.kill9()
        await send(5, 5)
        sink.start()
        await wait_until(lambda: rotated_away(10), "not rotated by age after a restart")
    finally:
        sink.stop()
    numbers = [orjson.loads(line)["n"] for line in all_lines(data, "aussen")]
    assert numbers == list(range(10))


@pytest.mark.slow
@pytest.mark.anyio
async def test_sink_process_rotates_compresses_and_serves_metrics(
    nats_single: NatsCluster, tmp_path: Path, make_client  # noqa: F811
) -> None:
    ingest = make_client(backend="nats", nats_url=nats_single.urls, nats_stream="life",
                         nats_replicas=1, data_dir=tmp_path / "ingest")
    port = free_port()
    sink = SinkProcess(tmp_path / "sink", {
        "LEITSTAND_BACKEND": "nats", "LEITSTAND_NATS_URL": nats_single.urls,
        "LEITSTAND_NATS_STREAM": "life", "LEITSTAND_NATS_REPLICAS": "1",
        "LEITSTAND_ROTATE_BYTES": "2KiB", "LEITSTAND_COMPRESS": "zstd",
        "LEITSTAND_MIN_FREE_BYTES": "0", "LEITSTAND_SINK_METRICS_ADDRESS": f"127.0.0.1:{port}",
    }, tmp_path / "sink.log")
    data = tmp_path / "sink"
    try:
        sink.start()
        for n in range(60):  # while the sink runs: it writes (and rotates) as they come
            answer = await ingest.post("/v1/ingest?domain=aussen",
                                       json=[{"n": n, "k": k, "pad": "p" * 40} for k in range(5)])
            assert answer.status_code == 202
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 60
        while True:
            segments = segment_paths(data, "aussen")
            done = (len(all_lines(data, "aussen")) == 300 and segments
                    and all(p.name.endswith(".zst") for p in segments))
            if done:
                break
            assert time.monotonic() < deadline, sink.log()
            await asyncio.sleep(0.2)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        sink.stop()
    lines = all_lines(data, "aussen")
    assert len(lines) == len(set(lines)) == 300
    assert len(segments) >= 5
    assert 'leitstand_rotations_total{domain="aussen"}' in text
    assert 'leitstand_compressions_total{domain="aussen"}' in text
    assert "leitstand_events_total" in text
