"""The nats backend as it runs in production: a 3-node JetStream cluster, two leitstand ingest
nodes (uvicorn processes) and one sink process, all on loopback, with kill -9 faults."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import orjson
import pytest

from leitstand.domains import data_file_name
from testing import NatsCluster, ServerProcess, SinkProcess

from .conftest import TOKEN

DOMAINS = ("aussen", "sensor.home")
STREAM = "leitstand"
CONSUMER = "leitstand-sink"


class Topology:
    def __init__(self, root: Path, *, nats_timeout: float) -> None:
        self.root = root
        self.cluster = NatsCluster(root / "nats", size=3)
        self.env = {
            "LEITSTAND_BACKEND": "nats",
            "LEITSTAND_NATS_URL": self.cluster.urls,
            "LEITSTAND_NATS_TIMEOUT": str(nats_timeout),
            "LEITSTAND_NATS_REPLICAS": "3",
        }
        # Each ingest node has a data dir of its own: they hold no state; the files are the sink's.
        self.nodes = [
            ServerProcess(root / f"ingest{i}" / "data", token=TOKEN, env=self.env,
                          log_path=root / f"ingest{i}.log")
            for i in range(2)
        ]
        self.sink_dir = root / "sink"
        self.sink = SinkProcess(self.sink_dir, self.env, root / "sink.log")

    async def start(self) -> None:
        await asyncio.to_thread(self.cluster.start)
        for node in self.nodes:
            await asyncio.to_thread(node.start)
        await asyncio.to_thread(self.sink.start)

    async def stop(self) -> None:
        for proc in (self.sink, *self.nodes):
            await asyncio.to_thread(proc.stop)
        await asyncio.to_thread(self.cluster.stop)

    def stored(self) -> Counter[str]:
        """How often each event id is in the sink's files."""
        seen: Counter[str] = Counter()
        for domain in DOMAINS:
            path = self.sink_dir / data_file_name(domain)
            if path.exists():
                for line in path.read_bytes().splitlines():
                    event = orjson.loads(line)
                    assert event["domain"] == domain
                    seen[event["id"]] += 1
        return seen

    async def wait_sink_caught_up(self, timeout: float = 90.0) -> None:
        """Until the sink has written and acknowledged everything in the stream."""
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.cluster.urls.split(","))
        try:
            js = nc.jetstream(timeout=2.0)
            while True:
                try:
                    info = await js.consumer_info(STREAM, CONSUMER)
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        return
                except (nats.errors.Error, asyncio.TimeoutError):
                    pass
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"sink did not catch up: {self.sink.log()}")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def stream_leader(self, timeout: float = 30.0) -> int:
        """The node that leads the stream (the worst one to lose); node 0 if no one answers."""
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.cluster.urls.split(","))
        try:
            while time.monotonic() < deadline:
                try:
                    info = await nc.jetstream(timeout=5.0).stream_info(STREAM)
                except (nats.errors.Error, asyncio.TimeoutError):
                    await asyncio.sleep(0.2)
                    continue
                leader = info.cluster.leader if info.cluster else None
                return next((i for i, n in enumerate(self.cluster.nodes) if n.name == leader), 0)
        finally:
            await nc.close()
        return 0


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[Topology]:
    topo = Topology(tmp_path, nats_timeout=3.0)
    try:
        await topo.start()
        yield topo
    finally:
        await topo.stop()


def events(ids: list[str], domain: str) -> list[dict[str, object]]:
    return [{"id": i, "domain": domain, "payload": "x" * 40} for i in ids]


async def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.anyio
async def test_kills_under_load_every_acknowledged_event_once(topology: Topology) -> None:
    """32 clients on both ingest nodes; meanwhile the stream leader is killed (-9) and restarted,
    and the sink is killed (-9) and restarted five times. Every event answered 2xx is in the
    sink's files exactly once; no event is there twice; every other answer was a 503."""
    clients, requests_each, per_request = 32, 24, 3
    acked: list[str] = []
    failed: Counter[str] = Counter()
    done = asyncio.Event()
    chaos_over = asyncio.Event()
    sink_kills_under_load = 0

    async def producer(c: int, http: httpx.AsyncClient) -> None:
        keyed = c % 2 == 0  # half send an Idempotency-Key and retry like the client library
        r = -1
        # At least `requests_each` requests, and on until the faults are over (bounded).
        while (r := r + 1) < requests_each or (not chaos_over.is_set()
                                               and r < 8 * requests_each):
            ids = [f"c{c}-r{r}-e{j}" for j in range(per_request)]
            domain = DOMAINS[(c + r) % len(DOMAINS)]
            headers = {"X-Auth": TOKEN}
            if keyed:
                headers["Idempotency-Key"] = f"c{c}-r{r}"
            for attempt in range(4 if keyed else 1):
                node = topology.nodes[(c + r + attempt) % 2]
                response = await http.post(f"{node.url}/v1/ingest?domain={domain}",
                                           json=events(ids, domain), headers=headers)
                if response.status_code == 202:
                    assert response.json()["accepted"] == per_request
                    acked.extend(ids)
                    break
                assert response.status_code == 503, response.text
                assert int(response.headers["Retry-After"]) >= 1
                failed[response.json()["detail"]] += 1

    async def chaos() -> None:
        nonlocal sink_kills_under_load
        total = clients * requests_each * per_request
        await wait_until(lambda: len(acked) > total // 8, 120, "first events")
        leader = await topology.stream_leader()
        await asyncio.to_thread(topology.cluster.kill9, leader)
        for round_ in range(5):
            threshold = len(acked) + total // 14
            await wait_until(lambda t=threshold: len(acked) > t or done.is_set(), 120,
                             f"progress before sink kill {round_}")
            sink_kills_under_load += not done.is_set()
            await asyncio.to_thread(topology.sink.kill9)
            await asyncio.to_thread(topology.sink.start)
            if round_ == 0:
                await asyncio.to_thread(topology.cluster.restart, leader)
        chaos_over.set()

    async with httpx.AsyncClient(timeout=60) as http:
        chaos_task = asyncio.ensure_future(chaos())
        await asyncio.gather(*(producer(c, http) for c in range(clients)))
        done.set()
        await asyncio.wait_for(chaos_task, 180)

    assert sink_kills_under_load == 5, "the load ended before the faults were over"
    await topology.wait_sink_caught_up()
    stored = topology.stored()
    doubled = {i: n for i, n in stored.items() if n > 1}
    assert not doubled, f"stored more than once: {sorted(doubled)[:10]}"
    missing = set(acked) - set(stored)
    assert not missing, f"acknowledged but not stored: {sorted(missing)[:10]}"
    assert len(acked) == len(set(acked))
    # The cluster kept a quorum: most requests must have gone through.
    assert len(acked) >= clients * requests_each * per_request // 2, failed
    print(f"acked {len(acked)} events, stored {len(stored)}, 503s: {dict(failed)}, "
          f"sink kills under load: {sink_kills_under_load}")


@pytest.mark.slow
@pytest.mark.anyio
async def test_same_idempotency_key_on_two_ingest_nodes_is_one_event(
    topology: Topology,
) -> None:
    a, b = topology.nodes
    body = events(["k1-a", "k1-b"], "aussen")
    headers = {"X-Auth": TOKEN, "Idempotency-Key": "shared-key-1"}
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.post(f"{a.url}/v1/ingest?domain=aussen", json=body, headers=headers)
        second = await http.post(f"{b.url}/v1/ingest?domain=aussen", json=body, headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.json() == second.json() == {"status": "accepted", "accepted": 2,
                                                 "domain": "aussen"}
        assert second.headers["Idempotent-Replayed"] == "true"
        # Both at once, on both nodes, with another key.
        racing = {"X-Auth": TOKEN, "Idempotency-Key": "shared-key-2"}
        body2 = events(["k2-a", "k2-b", "k2-c"], "aussen")
        answers = await asyncio.gather(*(
            http.post(f"{node.url}/v1/ingest?domain=aussen", json=body2, headers=racing)
            for node in (a, b, a, b)
        ))
        assert [r.status_code for r in answers] == [202] * 4
        conflict = await http.post(f"{b.url}/v1/ingest?domain=aussen",
                                   json=events(["other"], "aussen"), headers=headers)
        assert conflict.status_code == 422
    await topology.wait_sink_caught_up()
    assert topology.stored() == Counter({i: 1 for i in ("k1-a", "k1-b", "k2-a", "k2-b", "k2-c")})


@pytest.mark.slow
@pytest.mark.anyio
async def test_all_nats_nodes_down_503_within_timeout_then_recovers(tmp_path: Path) -> None:
    topo = Topology(tmp_path, nats_timeout=2.0)
    ids = itertools.count()
    sent: list[str] = []
    try:
        await topo.start()
        node = topo.nodes[0]
        async with httpx.AsyncClient(timeout=30, headers={"X-Auth": TOKEN}) as http:

            async def send() -> httpx.Response:
                sent.append(f"e{next(ids)}")
                return await http.post(f"{node.url}/v1/ingest?domain=aussen",
                                       json=events(sent[-1:], "aussen"))

            assert (await send()).status_code == 202
            for i in range(3):
                await asyncio.to_thread(topo.cluster.kill9, i)
            for _ in range(3):  # while disconnected, and again after the reconnect attempts
                started = time.monotonic()
                response = await send()
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "2"
                assert elapsed < 2.0 + 1.5, elapsed  # LEITSTAND_NATS_TIMEOUT plus slack
            health = await http.get(f"{node.url}/health")
            assert health.status_code == 503
            assert health.json()["backend"]["connected"] is False

            for i in range(3):
                await asyncio.to_thread(topo.cluster.nodes[i].start)
            await asyncio.to_thread(topo.cluster.wait_ready, topo.cluster.nodes, 60)
            deadline = time.monotonic() + 60
            while (response := await send()).status_code != 202:
                assert response.status_code == 503
                assert time.monotonic() < deadline, "ingest did not recover"
                await asyncio.sleep(0.2)
            assert (await http.get(f"{node.url}/health")).status_code == 200
        await topo.wait_sink_caught_up()
        stored = topo.stored()
        assert stored["e0"] == 1 and stored[sent[-1]] == 1  # before the outage and after
        assert max(stored.values()) == 1
    finally:
        await topo.stop()
