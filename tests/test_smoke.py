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


def test_readme_code_map_is_complete_and_true() -> None:
    """Every module the README's code map names exists, and every module of the package is named."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Aufbau des Codes\n```\n", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    parent = ""
    for line in block.splitlines():
        entry = line.split("#", 1)[0].rstrip()
        if not entry.strip():
            continue
        name = entry.strip()
        if line.startswith("  ") and parent:
            name = parent + name
        elif name.endswith("/"):
            parent = name
        assert (root / name).exists(), f"README names {name}, which does not exist"
        named.add(name)
    mentioned = block + " ".join(named)
    for module in sorted((root / "leitstand").glob("*.py")):
        if module.name != "__init__.py":
            assert re.search(rf"\b{re.escape(module.name)}\b", mentioned), module.name
