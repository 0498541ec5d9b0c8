"""`kill -9` of the real server while 32 clients write: every acknowledged event is in the file
exactly once, no line is partial, a batch is there whole or not at all, and the server comes
back and takes writes every time. Batches sent with an Idempotency-Key whose answer the crash
swallowed are retried after the restart and must end up stored exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.metrics import Metrics
from leitstand.store import Idempotency, JsonlStore, StoreOptions
from testing import ROOT, ServerProcess

from .conftest import TOKEN
from .store_checks import metric, stored_events

pytestmark = pytest.mark.slow

CYCLES = 10
CONCURRENCY = 32


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, over all cycles."""

    acked: list[str] = field(default_factory=list)
    batches: dict[str, list[str]] = field(default_factory=dict)  # batch id → its event ids
    unanswered_keyed: dict[str, bytes] = field(default_factory=dict)  # key → NDJSON body
    unexpected: list[str] = field(default_factory=list)


def _batch(batch_id: str, rng: random.Random) -> tuple[list[str], bytes, str]:
    """(event ids, body, content type): a single JSON event or an NDJSON batch."""
    if rng.random() < 0.4:
        ids = [f"{batch_id}.0"]
        return ids, orjson.dumps({"id": ids[0], "b": batch_id}), "application/json"
    count = rng.randint(2, 40)
    ids = [f"{batch_id}.{i}" for i in range(count)]
    pad = "p" * rng.randint(10, 600)
    body = b"".join(orjson.dumps({"id": i, "b": batch_id, "pad": pad}) + b"\n" for i in ids)
    return ids, body, "application/x-ndjson"


async def _client(http: httpx.AsyncClient, cycle: int, number: int, ledger: Ledger,
                  stop: asyncio.Event) -> None:
    rng = random.Random(cycle * 1000 + number)
    n = 0
    while not stop.is_set():
        n += 1
        batch_id = f"c{cycle}w{number}n{n}"
        ids, body, ctype = _batch(batch_id, rng)
        ledger.batches[batch_id] = ids
        headers = {"X-Auth": TOKEN, "Content-Type": ctype}
        keyed = rng.random() < 0.3
        if keyed:
            headers["Idempotency-Key"] = batch_id
            ledger.unanswered_keyed[batch_id] = body
        try:
            response = await http.post("/v1/ingest?domain=crash", content=body,
                                       headers=headers)
        except httpx.TransportError:
            return  # the server is gone
        if response.status_code != 202:
            ledger.unexpected.append(f"{response.status_code} {response.text}")
            return
        ledger.acked.extend(ids)
        ledger.unanswered_keyed.pop(batch_id, None)


async def _retry_unanswered(url: str, ledger: Ledger) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        for key, body in list(ledger.unanswered_keyed.items()):
            response = await http.post(
                "/v1/ingest?domain=crash", content=body,
                headers={"X-Auth": TOKEN, "Idempotency-Key": key,
                         "Content-Type": "application/x-ndjson"},
            )
            assert response.status_code == 202, response.text
            ledger.acked.extend(ledger.batches[key])
            del ledger.unanswered_keyed[key]


async def _load_then_kill(server: ServerProcess, cycle: int, ledger: Ledger) -> None:
    await _retry_unanswered(server.url, ledger)
    before = len(ledger.acked)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, timeout=20, limits=limits) as http:
        clients = [asyncio.create_task(_client(http, cycle, n, ledger, stop))
                   for n in range(CONCURRENCY)]
        rng = random.Random(cycle)
        target = before + rng.randint(100, 400)
        deadline = asyncio.get_running_loop().time() + 60
        while len(ledger.acked) < target and not ledger.unexpected:
            assert asyncio.get_running_loop().time() < deadline, "the server stopped taking writes"
            await asyncio.sleep(0.01)
        await asyncio.to_thread(server.kill9)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
    assert len(ledger.acked) > before


def test_kill9_during_concurrent_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ledger = Ledger()
    for cycle in range(CYCLES):
        server = ServerProcess(data, token=TOKEN, log_path=tmp_path / f"server-{cycle}.log")
        try:
            server.start()
            # The start repaired whatever the last crash tore: only whole lines are left.
            stored_events(data / "crash.jsonl")
            asyncio.run(_load_then_kill(server, cycle, ledger))
        finally:
            server.stop()
        assert not ledger.unexpected, ledger.unexpected

    with ServerProcess(data, token=TOKEN, log_path=tmp_path / "server-last.log") as server:
        asyncio.run(_retry_unanswered(server.url, ledger))
        events = stored_events(data / "crash.jsonl")  # no partial or invalid line

    counts = Counter(str(e["id"]) for e in events)
    doubled = [i for i, c in counts.items() if c > 1]
    assert not doubled, f"stored more than once: {doubled[:10]}"
    missing = [i for i in ledger.acked if counts[i] != 1]
    assert not missing, f"acknowledged but not stored: {missing[:10]}"
    torn = [b for b, ids in ledger.batches.items()
            if 0 < sum(counts[i] for i in ids) < len(ids)]
    assert not torn, f"batches stored in part: {torn[:10]}"
    assert len(ledger.acked) >= CYCLES * 100


_BIG_WRITER = """
import asyncio, sys
from pathlib import Path
from leitstand.metrics import Metrics
from leitstand.store import Idempotency, JsonlStore, StoreOptions

async def main(data):
    store = JsonlStore(data, Metrics(), StoreOptions(fsync=False))
    await store.append("big", [b'{"n":-1}\\n'])
    lines = [b'{"n":%d,"pad":"%s"}\\n' % (n, b"x" * 5000) for n in range(20_000)]
    print("ready", flush=True)
    await store.append("big", lines, Idempotency.for_lines("big", lines))
    print("done", flush=True)

asyncio.run(main(Path(sys.argv[1])))
"""


def test_process_killed_in_the_middle_of_a_100mb_write(tmp_path: Path) -> None:
    """SIGKILL lands while one 100 MB `write()` is copying into the page cache: the batch is
    torn. The next start cuts it back to where it began (keeping the bytes in quarantine), and
    the client's retry with the same key stores it exactly once."""
    data = tmp_path / "data"
    path = data / "big.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", _BIG_WRITER, str(data)], cwd=ROOT,
                              stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None
        ready, _, _ = select.select([writer.stdout], [], [], 60)
        assert ready and writer.stdout.readline() == b"ready\n"
        seed = path.stat().st_size
        deadline = time.monotonic() + 60
        while path.stat().st_size == seed:  # the big write has begun
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.0005)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=30)
        writer.stdout.close()  # type: ignore[union-attr]

    lines = [b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * 5000) for n in range(20_000)]
    payload = b"".join(lines)
    torn = path.stat().st_size
    assert seed < torn < seed + len(payload), "the kill did not land inside the write"

    metrics = Metrics()
    store = JsonlStore(data, metrics, StoreOptions(fsync=False))  # the start repairs
    try:
        assert path.stat().st_size == seed
        assert metric(metrics.render().decode(), "leitstand_repairs_total") == 1
        quarantine = (data / ".leitstand" / "big.quarantine").read_bytes()
        assert quarantine.rstrip(b"\n") == payload[: torn - seed].rstrip(b"\n")

        async def retry() -> bool:
            result = await store.append("big", lines, Idempotency.for_lines("big", lines))
            return result.replayed

        assert asyncio.run(retry()) is False
    finally:
        asyncio.run(store.close())
    data_now = path.read_bytes()
    assert data_now == b'{"n":-1}\n' + payload
