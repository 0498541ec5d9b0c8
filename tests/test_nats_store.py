"""The nats backend in-process (ASGITransport) against one real nats-server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nats
import orjson
import pytest

from leitstand.config import Settings
from leitstand.nats.connection import domain_of, subject_for
from leitstand.nats.domainsink import DataDir
from leitstand.nats.sink import Sink
from leitstand.nats.store import COUNT_HEADER, FINGERPRINT_HEADER
from testing import NatsCluster

_streams = itertools.count()


@pytest.fixture(scope="module")
def nats_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), size=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def nats_client(
    make_client: Callable[..., httpx.AsyncClient], nats_single: NatsCluster
) -> Callable[..., httpx.AsyncClient]:
    """An in-process app on the nats backend, with a stream of its own."""

    def make(**overrides: object) -> httpx.AsyncClient:
        values: dict[str, object] = {
            "backend": "nats", "nats_url": nats_single.urls, "nats_replicas": 1,
            "nats_stream": f"test{next(_streams)}", "nats_timeout": 2.0,
        }
        values.update(overrides)
        return make_client(**values)

    return make


async def stream_messages(url: str, stream: str) -> list[tuple[str, bytes, dict[str, str]]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out: list[tuple[str, bytes, dict[str, str]]] = []
        if info.state.messages == 0:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((msg.subject or "", msg.data or b"", dict(msg.headers or {})))
        return out
    finally:
        await nc.close()


def settings_of(client: httpx.AsyncClient) -> Settings:
    return client.app.state.service.settings  # type: ignore[attr-defined]


def test_subjects_carry_the_domain_and_map_back() -> None:
    assert subject_for("leitstand", "sensor.home.lan") == "leitstand.sensor.home.lan"
    assert domain_of("leitstand", "leitstand.sensor.home.lan") == "sensor.home.lan"
    assert domain_of("leitstand", "other.sensor") is None


async def sink_until(settings: Settings, path: Path, expected: bytes, timeout: float) -> bytes:
    """Run the sink in-process on `settings` until `path` holds `expected` (or the deadline)."""
    data = DataDir(settings.data_dir, fsync=True, lock_timeout=2.0)
    stop = asyncio.Event()
    task = asyncio.ensure_future(Sink(settings, data).run(stop))
    try:
        deadline = time.monotonic() + timeout
        while True:
            content = path.read_bytes() if path.exists() else b""
            if content == expected or time.monotonic() >= deadline or task.done():
                return content
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        data.close()


@pytest.mark.anyio
async def test_a_batch_is_one_message_and_the_sink_writes_all_its_lines(
    nats_client: Callable[..., httpx.AsyncClient], nats_single: NatsCluster, tmp_path: Path
) -> None:
    client = nats_client()
    response = await client.post("/v1/ingest?domain=Haus.Garten",
                                 json=[{"event": "a"}, {"event": "b", "n": 1}, {"event": "c"}])
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "accepted": 3, "domain": "haus.garten"}
    single = await client.post("/v1/ingest?domain=haus.garten", json={"event": "d"})
    assert single.status_code == 202
    settings = settings_of(client)
    stream = settings.nats_stream
    batch = (b'{"event":"a","domain":"haus.garten"}\n'
             b'{"event":"b","n":1,"domain":"haus.garten"}\n'
             b'{"event":"c","domain":"haus.garten"}\n')
    messages = await stream_messages(nats_single.urls, stream)
    assert [(s, d, h.get(COUNT_HEADER)) for s, d, h in messages] == [
        (f"{stream}.haus.garten", batch, "3"),
        (f"{stream}.haus.garten", b'{"event":"d","domain":"haus.garten"}\n', "1"),
    ]
    expected = batch + b'{"event":"d","domain":"haus.garten"}\n'
    sink_dir = tmp_path / "sink"
    got = await sink_until(settings.model_copy(update={"data_dir": sink_dir}),
                           sink_dir / "haus.garten.jsonl", expected, timeout=20)
    assert got == expected
    legacy = await client.post("/ingest/aussen", json={"event": "old"})
    assert legacy.status_code == 200 and legacy.text == "ok"
    assert "Deprecation" in legacy.headers


@pytest.mark.anyio
async def test_a_batch_larger_than_one_mb_as_stored_is_one_message(
    nats_client: Callable[..., httpx.AsyncClient], nats_single: NatsCluster
) -> None:
    """A small body can grow past nats-server's 1 MB default: each event gains its domain.
    The test servers (like the README's config) allow 8 MB."""
    domain = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    client = nats_client()
    response = await client.post(f"/v1/ingest?domain={domain}", json=[{}] * 10_000)
    assert response.status_code == 202, response.text
    messages = await stream_messages(nats_single.urls, settings_of(client).nats_stream)
    assert len(messages) == 1
    data = messages[0][1]
    assert len(data) > 2_000_000
    assert data == b'{"domain":"%s"}\n' % domain.encode() * 10_000


@pytest.mark.anyio
async def test_a_batch_above_max_payload_is_413_and_nothing_is_stored(
    make_client: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    with NatsCluster(tmp_path / "small", size=1, max_payload=64 * 1024) as small:
        client = make_client(backend="nats", nats_url=small.urls, nats_replicas=1,
                             nats_stream="small", nats_timeout=2.0)
        body = [{"event": i, "pad": "x" * 40} for i in range(1000)]  # ~60 KB; more as stored
        response = await client.post("/v1/ingest?domain=aussen", json=body,
                                     headers={"Idempotency-Key": "big"})
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert "1000 events" in detail and "max_payload is 65536 bytes" in detail
        assert await stream_messages(small.urls, "small") == []
        # The connection survived (nothing was sent), and the batch fits once split.
        for part, key in ((body[:500], "big-1"), (body[500:], "big-2")):
            ok = await client.post("/v1/ingest?domain=aussen", json=part,
                                   headers={"Idempotency-Key": key})
            assert ok.status_code == 202, ok.text
        messages = await stream_messages(small.urls, "small")
        assert [m[2][COUNT_HEADER] for m in messages] == ["500", "500"]


@pytest.mark.anyio
async def test_idempotency_key_replay_and_conflict(
    nats_client: Callable[..., httpx.AsyncClient], nats_single: NatsCluster
) -> None:
    client = nats_client()
    body = [{"event": i} for i in range(3)]
    headers = {"Idempotency-Key": "batch-1"}
    first = await client.post("/v1/ingest?domain=aussen", json=body, headers=headers)
    again = await client.post("/v1/ingest?domain=aussen", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() == {"status": "accepted", "accepted": 3,
                                            "domain": "aussen"}
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/v1/ingest?domain=aussen", json=[{"event": "x"}] * 4,
                              headers=headers)
    assert other.status_code == 422
    assert other.json() == {"detail": "Idempotency-Key was already used with a different body"}
    stream = settings_of(client).nats_stream
    messages = await stream_messages(nats_single.urls, stream)
    assert len(messages) == 1  # the replay and the conflict stored nothing
    assert FINGERPRINT_HEADER in messages[0][2]
    assert messages[0][2]["Nats-Msg-Id"] == "aussen:batch-1"
    assert messages[0][2][COUNT_HEADER] == "3"


@pytest.mark.anyio
async def test_health_reports_the_backend(nats_client: Callable[..., httpx.AsyncClient]) -> None:
    client = nats_client()
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["backend"]["connected"] is True and body["backend"]["stream"] is True


@pytest.mark.anyio
async def test_unreachable_nats_is_503_with_retry_after_within_the_timeout(
    nats_client: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    # Nothing listens on this port: connecting never succeeds.
    from testing import free_port

    client = nats_client(nats_url=f"nats://127.0.0.1:{free_port()}", nats_timeout=1.0)
    started = time.monotonic()
    response = await client.post("/v1/ingest?domain=aussen", json={"event": "lost"})
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "NATS" in response.json()["detail"]
    assert elapsed < 1.0 + 1.0  # the configured timeout, plus scheduling slack
    health = await client.get("/health")
    assert health.status_code == 503
    assert health.json()["backend"]["connected"] is False


@pytest.mark.anyio
async def test_read_api_serves_the_data_dir(
    nats_client: Callable[..., httpx.AsyncClient], data_dir: Path
) -> None:
    # With nats the read side reads LEITSTAND_DATA_DIR: the sink's files.
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "aussen.jsonl").write_bytes(b'{"event":"x","domain":"aussen"}\n')
    client = nats_client()
    domains = await client.get("/v1/domains")
    assert domains.status_code == 200
    assert [d["domain"] for d in domains.json()["domains"]] == ["aussen"]
    events = await client.get("/v1/events?domain=aussen")
    assert events.status_code == 200
    assert [orjson.loads(line) for line in events.content.splitlines()] == [
        {"event": "x", "domain": "aussen"}
    ]
