"""The happy path, in-process and against the real server."""

from __future__ import annotations

import httpx
import orjson
import pytest

from testing import ServerProcess

from .conftest import TOKEN


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


def test_architecture_package_tree_is_complete_and_true() -> None:
    """Every path docs/architecture.md's package tree names exists, and every module of the
    package (at any depth) has its own line in it."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## The package\n", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    parents: list[str] = []  # the directory at each indentation level (two spaces each)
    for line in block.splitlines():
        entry = line.split("#", 1)[0].rstrip()
        if not entry.strip():
            continue
        depth = (len(entry) - len(entry.lstrip())) // 2
        assert depth <= len(parents), f"{line!r} is indented below no directory"
        del parents[depth:]
        name = "".join(parents) + entry.strip()
        assert (root / name).exists(), f"docs/architecture.md names {name}, which does not exist"
        named.add(name)
        if name.endswith("/"):
            parents.append(entry.strip())
    for module in sorted((root / "leitstand").rglob("*.py")):
        if module.name in ("__init__.py", "__main__.py"):
            continue  # the package's own line stands for them
        name = module.relative_to(root).as_posix()
        assert name in named, f"{name} has no line in docs/architecture.md's package tree"
