"""Two uvicorn worker processes appending to one domain file: the flock protocol keeps every
line whole and every idempotency key stored once, across processes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import orjson
import pytest

from testing import ServerProcess

from .conftest import TOKEN
from .store_checks import metric, stored_events

pytestmark = pytest.mark.slow

CLIENTS = 64
REQUESTS_PER_CLIENT = 6


def _event(client: int, number: int, rng: random.Random) -> dict[str, object]:
    size = int(10 * (10_000 ** rng.random()))  # log-uniform from 10 B to 100 KB of padding
    return {"id": f"c{client}-{number}", "pad": "x" * size}


async def _client(http: httpx.AsyncClient, client: int, sent: dict[str, bytes]) -> None:
    rng = random.Random(client)
    for number in range(REQUESTS_PER_CLIENT):
        event = _event(client, number, rng)
        body = orjson.dumps(event)
        # A new connection per request, so that the kernel hands them to both workers.
        response = await http.post("/v1/ingest?domain=shared", content=body,
                                   headers={"Content-Type": "application/json",
                                            "Connection": "close"})
        assert response.status_code == 202, response.text
        sent[str(event["id"])] = orjson.dumps({**event, "domain": "shared"})


def test_two_workers_64_clients_one_domain_nothing_lost_or_interleaved(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", token=TOKEN, workers=2) as server:
        sent: dict[str, bytes] = {}

        async def run() -> None:
            # Up to 64 connections at once (one pool keeps the test's own CPU low).
            async with httpx.AsyncClient(base_url=server.url, headers={"X-Auth": TOKEN},
                                         timeout=60, limits=httpx.Limits(max_connections=CLIENTS)
                                         ) as http:
                await asyncio.wait_for(asyncio.gather(
                    *(_client(http, c, sent) for c in range(CLIENTS))
                ), timeout=240)

        asyncio.run(run())
        path = server.data_dir / "shared.jsonl"
        raw_lines = path.read_bytes().splitlines()
        events = stored_events(path)
        shares = _events_per_worker(server.url, "shared", len(events))

    assert len(events) == len(sent) == CLIENTS * REQUESTS_PER_CLIENT
    by_id = {str(e["id"]): line for e, line in zip(events, raw_lines, strict=True)}
    assert len(by_id) == len(events), "an event was stored twice"
    for event_id, line in by_id.items():
        assert line == sent[event_id], f"line of {event_id} differs from what was sent"
    sizes = [len(line) for line in raw_lines]
    assert min(sizes) < 100 and max(sizes) > 50_000  # the size range was really exercised
    assert len(shares) == 2 and all(shares), f"both workers must have written: {shares}"


def _events_per_worker(url: str, domain: str, total: int) -> list[float]:
    """Each worker counts its own events; scrape /metrics over fresh connections until two
    counts that add up to `total` were seen (or give up after 100 tries)."""
    seen: set[float] = set()
    for _ in range(100):
        text = httpx.get(url + "/metrics", timeout=10).text
        seen.add(metric(text, f'leitstand_events_total{{domain="{domain}"}}'))
        for count in seen:
            if 0 < count < total and total - count in seen:
                return [count, total - count]
    return sorted(seen)


def test_same_idempotency_key_from_many_clients_across_two_workers_stores_once(
    tmp_path: Path,
) -> None:
    with ServerProcess(tmp_path / "data", token=TOKEN, workers=2) as server:
        async def run() -> list[httpx.Response]:
            # A fresh connection per request (Connection: close), so both workers take a share.
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                async def post(key: str) -> httpx.Response:
                    return await http.post(
                        "/v1/ingest?domain=keys", json=[{"n": 1}, {"n": 2}],
                        headers={"X-Auth": TOKEN, "Idempotency-Key": key,
                                 "Connection": "close"},
                    )

                answers = []
                for round_ in range(8):
                    answers += await asyncio.wait_for(
                        asyncio.gather(*(post(f"key-{round_}") for _ in range(12))),
                        timeout=120,
                    )
                return answers

        answers = asyncio.run(run())
        events = stored_events(server.data_dir / "keys.jsonl")
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert all(a.json()["accepted"] == 2 for a in answers)
    assert len(events) == 8 * 2  # one batch of two lines per key
    replayed = sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers)
    assert replayed == 8 * 11
