"""kill -9 under rotation-heavy load (a 1 KiB `LEITSTAND_ROTATE_BYTES`, zstd compressing all the
time), ten times, with real processes: after each restart every acknowledged event is there
exactly once, no line is torn, no segment is both raw and compressed, and no temporary file of
an interrupted compression is left; replaying the requests whose answer was lost (same
`Idempotency-Key`) stores each of them exactly once, across rotations and restarts."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from testing import UNLIMITED, ServerProcess

from .conftest import TOKEN
from .lifecycle_checks import all_lines

CYCLES = 10
WRITERS = 8
DOMAINS = ("aussen", "innen")
ENV = {
    "LEITSTAND_ROTATE_BYTES": "1KiB",
    "LEITSTAND_COMPRESS": "zstd",
    "LEITSTAND_MIN_FREE_BYTES": "0",
    "LEITSTAND_READ_RATE_LIMIT": UNLIMITED,
}
Request = tuple[str, str, tuple[tuple[int, int], ...]]  # key, domain, event ids


class Load:
    """Writers that send keyed batches until stopped; what was acknowledged and what was sent
    without an answer."""

    def __init__(self) -> None:
        self.acked: dict[str, set[tuple[int, int]]] = {d: set() for d in DOMAINS}
        self.unanswered: list[Request] = []
        self._lock = threading.Lock()
        self._next = 0

    def request(self, writer: int) -> Request:
        with self._lock:
            self._next += 1
            n = self._next
        ids = tuple((writer, n * 10 + k) for k in range(random.randint(1, 8)))
        return f"w{writer}-{n}", DOMAINS[n % len(DOMAINS)], ids

    def send(self, http: httpx.Client, request: Request) -> bool:
        key, domain, ids = request
        body = b"".join(orjson.dumps({"w": w, "i": i, "pad": "p" * 40}) + b"\n" for w, i in ids)
        try:
            answer = http.post("/v1/ingest", params={"domain": domain}, content=body,
                               headers={"Idempotency-Key": key,
                                        "Content-Type": "application/x-ndjson"})
        except httpx.HTTPError:
            answer = None
        with self._lock:
            if answer is not None and answer.status_code == 202:
                self.acked[domain].update(ids)
                return True
            self.unanswered.append(request)
            return False

    def run(self, url: str, stop: threading.Event) -> None:
        def writer(w: int) -> None:
            with httpx.Client(base_url=url, headers={"X-Auth": TOKEN}, timeout=10) as http:
                while not stop.is_set():
                    if not self.send(http, self.request(w)):
                        return  # the server is gone

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for thread in threads:
            thread.start()
        stop.wait()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()


def _leftovers(data: Path) -> tuple[int, int]:
    """(temporary files, raw segments that also have a compressed copy) in the archive."""
    tmp = pairs = 0
    for folder in (data / "archive").glob("*"):
        names = {p.name for p in folder.iterdir()}
        tmp += sum(n.endswith(".tmp") for n in names)
        pairs += sum(n + ".zst" in names for n in names if n.endswith(".jsonl"))
    return tmp, pairs


def _check(data: Path, load: Load, sent: set[tuple[int, int]]) -> None:
    for domain in DOMAINS:
        events = [orjson.loads(line) for line in all_lines(data, domain)]  # no torn line
        ids = [(e["w"], e["i"]) for e in events]
        assert len(ids) == len(set(ids)), f"{domain}: an event is stored twice"
        assert load.acked[domain] <= set(ids), f"{domain}: an acknowledged event is missing"
        assert set(ids) <= sent
    assert _leftovers(data) == (0, 0)


@pytest.mark.slow
def test_kill9_under_rotation_and_compression(tmp_path: Path) -> None:
    data = tmp_path / "data"
    load = Load()
    caught_mid_compression = 0
    for cycle in range(CYCLES):
        server = ServerProcess(data, token=TOKEN, workers=2, env=ENV,
                               log_path=tmp_path / f"server-{cycle}.log")
        with server:
            with httpx.Client(base_url=server.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
                replay, load.unanswered = load.unanswered, []
                for request in replay:  # the answer was lost: the same key again
                    assert load.send(http, request), server.log()
            stop = threading.Event()
            runner = threading.Thread(target=load.run, args=(server.url, stop))
            runner.start()
            time.sleep(random.uniform(0.8, 2.0))
            server.kill9()
            stop.set()
            runner.join(60)
        tmp, pairs = _leftovers(data)
        caught_mid_compression += bool(tmp or pairs)
        # Restart: the start repairs what the kill left; a graceful stop, then look at the files.
        with ServerProcess(data, token=TOKEN, workers=2, env=ENV,
                           log_path=tmp_path / f"restart-{cycle}.log"):
            pass
        sent = {i for _, _, ids in load.unanswered for i in ids}
        for ids in load.acked.values():
            sent |= ids
        _check(data, load, sent)
    last = ServerProcess(data, token=TOKEN, env=ENV, log_path=tmp_path / "last.log")
    with last, httpx.Client(base_url=last.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
        for request in load.unanswered:
            assert load.send(http, request)
    for domain in DOMAINS:  # every request stored exactly once, nothing else
        ids = [(e["w"], e["i"]) for e in map(orjson.loads, all_lines(data, domain))]
        assert sorted(ids) == sorted(load.acked[domain])
    print(f"{CYCLES} kills; {caught_mid_compression} left a compression half done; "
          f"{sum(map(len, load.acked.values()))} events")
