"""The happy path, in-process and against the real server."""

from __future__ import annotations

import httpx
import orjson
import pytest

from .conftest import TOKEN
from .server import ServerProcess


@pytest.mark.anyio
async def test_ingest_one_event_in_process(client: httpx.AsyncClient, data_dir) -> None:
    response = await client.post("/v1/ingest?domain=aussen", json={"event": "demo"})
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "accepted": 1, "domain": "aussen"}
    lines = (data_dir / "aussen.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [{"event": "demo", "domain": "aussen"}]


def test_readme_curl_example_against_real_server(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/ingest/aussen",
        headers={"Content-Type": "application/json", "X-Auth": TOKEN},
        content=b'{"event": "demo", "status": "ok"}',
    )
    assert response.status_code == 200
    assert response.text == "ok"
    stored = (server.data_dir / "aussen.jsonl").read_bytes()
    assert stored == b'{"event":"demo","status":"ok","domain":"aussen"}\n'
