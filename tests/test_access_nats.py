"""The nats backend applies the same scopes: the write check sits in front of the store, so an
out-of-scope batch never becomes a JetStream message (a real single-node nats-server)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nats
import pytest

from testing import NatsCluster

pytestmark = pytest.mark.anyio

WRITER = "garten-writer-secret"


@pytest.fixture(scope="module")
def nats_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), size=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


async def subjects(url: str, stream: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        if info.state.messages == 0:
            return []
        return [(await js.get_msg(stream, seq)).subject or ""
                for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    finally:
        await nc.close()


async def test_out_of_scope_batches_never_reach_the_stream(
        make_client: Callable[..., httpx.AsyncClient], nats_single: NatsCluster,
        tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[token]]\nname = "garten-sensor"\nsha256 = '
                    f'"{hashlib.sha256(WRITER.encode()).hexdigest()}"\nwrite = ["garten.*"]\n')
    client = make_client(backend="nats", nats_url=nats_single.urls, nats_replicas=1,
                         nats_stream="tokens", nats_timeout=2.0, tokens_file=path)
    ok = await client.post("/v1/ingest?domain=garten.beet", json=[{"n": 1}, {"n": 2}],
                           headers={"X-Auth": WRITER})
    assert ok.status_code == 202
    for url in ("/v1/ingest?domain=keller", "/ingest/aussen"):
        denied = await client.post(url, json={"n": 3}, headers={"X-Auth": WRITER})
        assert denied.status_code == 403, url
    assert denied.json() == {"detail": "token 'garten-sensor' may not write domain 'aussen'"}
    assert await subjects(nats_single.urls, "tokens") == ["tokens.garten.beet"]
