"""The NATS sink writes through the same rotation as the embedded store: its files rotate into
`archive/<stem>/`, compress and stay exactly once across a crash right after a rotation; and the
sink process serves its own Prometheus metrics (`LEITSTAND_SINK_METRICS_ADDRESS`)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from leitstand.metrics import Metrics
from leitstand.nats.domainsink import DomainSink
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
