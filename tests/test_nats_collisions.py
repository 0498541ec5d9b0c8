"""Cluster mode and two long domains with the same file name (the birthday-search pair of
test_store_domain_collision.py). The ingest node answered 202 before the sink saw the message, so
the sink cannot refuse the second domain; it checks the owner record as the embedded store does,
never writes the second domain into the first one's file, and keeps its events exactly once in
`.leitstand/collisions/<stem>.jsonl` (docs/cluster.md). An ingest node that sees the sink's
directory refuses the second domain up front with 409."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.domains import data_file_name, file_stem
from leitstand.nats.domainsink import DataDir
from testing import NatsCluster, SinkProcess
from testing.processes import free_port

from .test_nats_sink import nats_single  # noqa: F401 - the module's nats-server fixture
from .test_store_domain_collision import birthday_pair

FIRST, SECOND = birthday_pair()


def line(domain: str, n: int) -> bytes:
    return orjson.dumps({"n": n, "domain": domain}, option=orjson.OPT_APPEND_NEWLINE)


def collision_file(data: Path) -> Path:
    return data / ".leitstand" / "collisions" / (file_stem(FIRST) + ".jsonl")


def numbers(path: Path, domain: str) -> list[int]:
    """The `n` of every line of `path`, checking that each line belongs to `domain`."""
    if not path.exists():
        return []
    events = [orjson.loads(raw) for raw in path.read_bytes().splitlines()]
    assert {e["domain"] for e in events} <= {domain}, path
    return [e["n"] for e in events]


def test_the_sink_keeps_a_colliding_domain_apart_exactly_once(tmp_path: Path) -> None:
    assert data_file_name(FIRST) == data_file_name(SECOND)
    data = DataDir(tmp_path, fsync=True, lock_timeout=2.0)
    run = [(1, FIRST, line(FIRST, 0)), (2, SECOND, line(SECOND, 100)),
           (3, FIRST, line(FIRST, 1)), (4, SECOND, line(SECOND, 101))]
    assert data.apply(run) == 4
    assert data.metrics.registry.get_sample_value("leitstand_sink_collided_events_total") == 2
    data.close()  # a crash before the last ack: JetStream redelivers 4

    again = DataDir(tmp_path, fsync=True, lock_timeout=2.0)
    try:
        # Acked up to 3 only. The second domain's message comes first now (a new process that
        # knows nothing yet): the record still names the first domain as the owner.
        redelivered = [(4, SECOND, line(SECOND, 101)), (5, SECOND, line(SECOND, 102)),
                       (6, FIRST, line(FIRST, 2))]
        assert again.apply(redelivered) == 2
        assert again.metrics.registry.get_sample_value(
            "leitstand_sink_collided_events_total") == 1
    finally:
        again.close()
    assert numbers(tmp_path / data_file_name(FIRST), FIRST) == [0, 1, 2]
    assert numbers(collision_file(tmp_path), SECOND) == [100, 101, 102]
    record = tmp_path / ".leitstand" / (file_stem(FIRST) + ".dom")
    assert record.read_text() == FIRST + "\n"


@pytest.mark.slow
@pytest.mark.anyio
async def test_cluster_mode_keeps_two_long_domains_with_one_file_name_apart(
    nats_single: NatsCluster, tmp_path: Path, make_client  # noqa: F811
) -> None:
    """Both domains get 202 from an ingest node that does not see the sink's files; the sink
    (a real process, killed with -9 and restarted in between) writes only the first domain into
    its file and the second one's events exactly once into the collision file."""
    ingest = make_client(backend="nats", nats_url=nats_single.urls, nats_stream="collide",
                         nats_replicas=1, data_dir=tmp_path / "ingest")
    data = tmp_path / "sink"
    port = free_port()
    sink = SinkProcess(data, {
        "LEITSTAND_BACKEND": "nats", "LEITSTAND_NATS_URL": nats_single.urls,
        "LEITSTAND_NATS_STREAM": "collide", "LEITSTAND_NATS_REPLICAS": "1",
        "LEITSTAND_MIN_FREE_BYTES": "0", "LEITSTAND_SINK_METRICS_ADDRESS": f"127.0.0.1:{port}",
    }, tmp_path / "sink.log")
    sent: dict[str, list[int]] = {FIRST: [], SECOND: []}

    async def send(first: int, count: int) -> None:
        for n in range(first, first + count):
            for domain, value in ((FIRST, n), (SECOND, 1000 + n)):
                answer = await ingest.post("/v1/ingest", params={"domain": domain},
                                           json={"n": value})
                assert answer.status_code == 202, answer.text
                sent[domain].append(value)

    async def wait_until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, f"{what}: {sink.log()}"
            await asyncio.sleep(0.1)

    def all_written() -> bool:
        return (len(numbers(data / data_file_name(FIRST), FIRST)) >= len(sent[FIRST])
                and len(numbers(collision_file(data), SECOND)) >= len(sent[SECOND]))

    try:
        sink.start()
        await send(0, 5)
        await wait_until(all_written, "the sink did not write the first events")
        await send(5, 10)  # the kill lands wherever the sink is with these
        sink.kill9()
        await send(15, 5)
        sink.start()
        await send(20, 5)
        await wait_until(all_written, "the sink did not catch up after a kill -9")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        sink.stop()
    assert numbers(data / data_file_name(FIRST), FIRST) == sent[FIRST] == list(range(25))
    assert numbers(collision_file(data), SECOND) == sent[SECOND]
    log = sink.log()
    assert "ERROR" in log and repr(FIRST) in log and repr(SECOND) in log
    collided = [float(row.split()[-1]) for row in metrics.splitlines()
                if row.startswith("leitstand_sink_collided_events_total ")]
    # The restarted sink wrote the 10 events sent after the kill, and those of the 10 sent
    # before it that the killed one had not written yet.
    assert len(collided) == 1 and 10 <= collided[0] <= 20


@pytest.mark.slow
@pytest.mark.anyio
async def test_an_ingest_node_that_sees_the_sinks_files_answers_409(
    nats_single: NatsCluster, tmp_path: Path, make_client  # noqa: F811
) -> None:
    data = tmp_path / "sink"
    ingest = make_client(backend="nats", nats_url=nats_single.urls, nats_stream="collide409",
                         nats_replicas=1, data_dir=data)
    sink = SinkProcess(data, {
        "LEITSTAND_BACKEND": "nats", "LEITSTAND_NATS_URL": nats_single.urls,
        "LEITSTAND_NATS_STREAM": "collide409", "LEITSTAND_NATS_REPLICAS": "1",
        "LEITSTAND_MIN_FREE_BYTES": "0",
    }, tmp_path / "sink.log")
    try:
        sink.start()
        answer = await ingest.post("/v1/ingest", params={"domain": FIRST}, json={"n": 0})
        assert answer.status_code == 202, answer.text
        record = data / ".leitstand" / (file_stem(FIRST) + ".dom")
        deadline = time.monotonic() + 60
        while not numbers(data / data_file_name(FIRST), FIRST):
            assert time.monotonic() < deadline, sink.log()
            await asyncio.sleep(0.1)
        assert record.read_text() == FIRST + "\n"

        refused = await ingest.post("/v1/ingest", params={"domain": SECOND}, json={"n": 100})
        assert refused.status_code == 409, refused.text
        assert "already belongs to the domain" in refused.json()["detail"]
        assert FIRST in refused.json()["detail"]
        assert (await ingest.get("/v1/events", params={"domain": SECOND})).status_code == 404
        again = await ingest.post("/v1/ingest", params={"domain": FIRST}, json={"n": 1})
        assert again.status_code == 202
        deadline = time.monotonic() + 60
        while len(numbers(data / data_file_name(FIRST), FIRST)) < 2:
            assert time.monotonic() < deadline, sink.log()
            await asyncio.sleep(0.1)
    finally:
        sink.stop()
    assert numbers(data / data_file_name(FIRST), FIRST) == [0, 1]
    assert not collision_file(data).exists()  # nothing of the second domain was published
