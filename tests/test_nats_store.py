"""The nats backend in-process (ASGITransport) against one real nats-server on loopback."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nats
import orjson
import pytest

from leitstand.store.nats import FINGERPRINT_HEADER, domain_of, subject_for

from .nats_cluster import NatsCluster

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
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((msg.subject or "", msg.data or b"", dict(msg.headers or {})))
        return out
    finally:
        await nc.close()


def settings_of(client: httpx.AsyncClient) -> object:
    return client.app.state.service.settings  # type: ignore[attr-defined]


def test_subjects_carry_the_domain_and_map_back() -> None:
    assert subject_for("leitstand", "sensor.home.lan") == "leitstand.sensor.home.lan"
    assert domain_of("leitstand", "leitstand.sensor.home.lan") == "sensor.home.lan"
    assert domain_of("leitstand", "other.sensor") is None


@pytest.mark.anyio
async def test_each_event_is_one_message_with_the_stored_line(
    nats_client: Callable[..., httpx.AsyncClient], nats_single: NatsCluster
) -> None:
    client = nats_client()
    response = await client.post("/v1/ingest?domain=Haus.Garten",
                                 json=[{"event": "a"}, {"event": "b", "n": 1}])
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "accepted": 2, "domain": "haus.garten"}
    stream = settings_of(client).nats_stream  # type: ignore[attr-defined]
    messages = await stream_messages(nats_single.urls, stream)
    assert [(s, d) for s, d, _ in messages] == [
        (f"{stream}.haus.garten", b'{"event":"a","domain":"haus.garten"}\n'),
        (f"{stream}.haus.garten", b'{"event":"b","n":1,"domain":"haus.garten"}\n'),
    ]
    legacy = await client.post("/ingest/aussen", json={"event": "old"})
    assert legacy.status_code == 200 and legacy.text == "ok"
    assert "Deprecation" in legacy.headers


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
    stream = settings_of(client).nats_stream  # type: ignore[attr-defined]
    messages = await stream_messages(nats_single.urls, stream)
    assert len(messages) == 3
    assert FINGERPRINT_HEADER in messages[0][2]
    assert [m[2]["Nats-Msg-Id"] for m in messages] == [f"aussen:{i}:batch-1" for i in range(3)]


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
    from .server import free_port

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
