"""The live stream (SSE) against the real server: delivery, resume, many clients, slow clients."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import orjson

from testing import ServerProcess

from .conftest import TOKEN

AUTH = {"X-Auth": TOKEN}


@contextmanager
def running(tmp_path: Path, **env: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", token=TOKEN, env=env)
    try:
        yield proc.start()
    finally:
        proc.stop()


def ingest(http: httpx.Client, domain: str, *events: dict) -> None:
    response = http.post("/v1/ingest", params={"domain": domain}, json=list(events))
    assert response.status_code == 202, response.text


class SSE:
    """A minimal SSE reader over an httpx streaming response; every read is bounded."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def events(self, count: int, deadline: float = 20.0) -> list[tuple[str | None, str, str]]:
        """The next `count` events as (id, event, data); comments and `retry:` are skipped."""
        out: list[tuple[str | None, str, str]] = []
        frame: dict[str, list[str]] = {}
        end = time.monotonic() + deadline
        while len(out) < count:
            assert time.monotonic() < end, f"only {len(out)} of {count} events"
            line = next(self.lines)  # bounded by the client's read timeout
            if line == "":
                if "data" in frame:
                    out.append((frame.get("id", [None])[-1], frame.get("event", ["message"])[-1],
                                "\n".join(frame["data"])))
                frame = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                frame.setdefault(name, []).append(value.removeprefix(" "))
        return out


def metric(http: httpx.Client, name: str) -> float:
    text = http.get("/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_for(check, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_stream_delivers_and_resumes_with_last_event_id(tmp_path: Path) -> None:
    with running(tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH,
                                                   timeout=10) as http:
        ingest(http, "aussen", {"n": 0})
        with http.stream("GET", "/v1/stream", params={"domain": "aussen"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            sse = SSE(response)
            wait_for(lambda: metric(http, "leitstand_stream_clients") == 1, "the stream")
            ingest(http, "aussen", {"n": 1}, {"n": 2})
            ingest(http, "aussen", {"n": 3})
            got = sse.events(3)  # from now on: the old event 0 is not repeated
        assert [orjson.loads(data)["n"] for _, _, data in got] == [1, 2, 3]
        # Each id is the cursor after its line: it works for /v1/events too.
        after_two = http.get("/v1/events", params={"domain": "aussen", "cursor": got[1][0]})
        assert [orjson.loads(x)["n"] for x in after_two.content.splitlines()] == [3]

        ingest(http, "aussen", {"n": 4}, {"n": 5})
        with http.stream("GET", "/v1/stream", params={"domain": "aussen"},
                         headers={"Last-Event-ID": got[-1][0]}) as response:
            resumed = SSE(response).events(2)
        assert [orjson.loads(data)["n"] for _, _, data in resumed] == [4, 5]
        with http.stream("GET", "/v1/stream", params={"domain": "aussen", "tail": "2"}) as resp:
            assert [orjson.loads(d)["n"] for _, _, d in SSE(resp).events(2)] == [4, 5]
        # A reconnect repeats the URL: Last-Event-ID wins over `tail`.
        ingest(http, "aussen", {"n": 6})
        with http.stream("GET", "/v1/stream", params={"domain": "aussen", "tail": "5"},
                         headers={"Last-Event-ID": resumed[-1][0]}) as response:
            assert [orjson.loads(d)["n"] for _, _, d in SSE(response).events(1)] == [6]
        bad = http.get("/v1/stream", params={"domain": "aussen"}, headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400


def test_stream_passes_lines_of_outside_writers(tmp_path: Path) -> None:
    with running(tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH,
                                                   timeout=10) as http:
        ingest(http, "aussen", {"n": 0})
        with http.stream("GET", "/v1/stream", params={"domain": "aussen"}) as response:
            sse = SSE(response)
            wait_for(lambda: metric(http, "leitstand_stream_clients") == 1, "the stream")
            with open(server.data_dir / "aussen.jsonl", "ab") as f:  # no wake-up: polled
                f.write(b"plain text, not JSON\r\n")
            assert sse.events(1)[0][2] == "plain text, not JSON"


def test_many_clients_get_every_event(tmp_path: Path) -> None:
    clients, events = 25, 30

    async def follow(url: str, got: list[list[int]]) -> None:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=20) as http, \
                http.stream("GET", "/v1/stream", params={"domain": "viele"}) as response:
            assert response.status_code == 200
            mine: list[int] = []
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    mine.append(orjson.loads(line[6:])["n"])
                    if len(mine) == events:
                        break
            got.append(mine)

    async def main(server: ServerProcess, http: httpx.Client) -> list[list[int]]:
        got: list[list[int]] = []
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                for _ in range(clients):
                    tasks.start_soon(follow, server.url, got)
                while metric(http, "leitstand_stream_clients") < clients:
                    await anyio.sleep(0.02)
                for i in range(events):
                    await anyio.to_thread.run_sync(ingest, http, "viele", {"n": i})
        return got

    with running(tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH,
                                                   timeout=10) as http:
        ingest(http, "viele", {"n": -1})
        got = anyio.run(main, server, http)
        assert len(got) == clients
        assert all(g == list(range(events)) for g in got)
        wait_for(lambda: metric(http, "leitstand_stream_clients") == 0, "clients to leave")


def stuck_client(server: ServerProcess, query: str, rcvbuf: int | None = None) -> socket.socket:
    """Connect, ask for the stream, and never read a byte."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /v1/stream?{query} HTTP/1.1\r\nHost: x\r\nX-Auth: {TOKEN}\r\n\r\n"
                 .encode())
    return sock


def test_stuck_client_is_disconnected_with_a_reason(tmp_path: Path) -> None:
    with running(tmp_path, LEITSTAND_STREAM_SEND_TIMEOUT="1") as server, \
            httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http:
        big = {"blob": "x" * 200_000}
        ingest(http, "dick", big)
        sock = stuck_client(server, "domain=dick&tail=1", rcvbuf=4096)
        try:
            wait_for(lambda: metric(http, "leitstand_stream_clients") == 1, "the stream")
            for _ in range(20):  # ~4 MB: far more than the socket buffers hold
                ingest(http, "dick", big)
            wait_for(lambda: metric(
                http, 'leitstand_stream_disconnects_total{reason="slow"}') == 1, "disconnect")
            wait_for(lambda: metric(http, "leitstand_stream_clients") == 0, "the stream to end")
            assert "client did not read for 1s" in server.log_path.read_text(errors="replace")
            # Ingest went on the whole time, and a healthy client still streams.
            with http.stream("GET", "/v1/stream", params={"domain": "dick", "tail": "1"}) as r:
                assert len(SSE(r).events(1)[0][2]) > 200_000
        finally:
            sock.close()


def queued_bytes(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive queue (without reading them)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def test_one_stuck_client_does_not_hold_up_ingest(tmp_path: Path) -> None:
    """Ingest never waits for a stream client: with one client connected that never reads
    (its sends blocked for good), every ingest is still answered, well inside a request
    timeout far shorter than the server's send timeout, and the stuck client is neither
    dropped nor served from a per-client buffer of events.

    The stuck client has a 4 KiB receive buffer and asks for a backlog larger than the kernel's
    largest socket send buffer, so the server's sends to it block; LEITSTAND_STREAM_SEND_TIMEOUT
    is 600 s, so an ingest that waited for that client would hang past the client's 30 s
    timeout. (How much a stuck client costs in latency is a speed question: bench/, not here.)"""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    blob = 64_000
    with running(tmp_path, LEITSTAND_FSYNC="off", LEITSTAND_STREAM_SEND_TIMEOUT="600") as server, \
            httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        ingest(http, "mess", {"first": True})
        start = http.get("/v1/events?domain=mess&limit=1").headers["X-Next-Cursor"]
        for i in range(wmem_max // blob + 16):  # more than the kernel and the transport hold
            ingest(http, "mess", {"backlog": i, "blob": "x" * blob})
        sock = stuck_client(server, f"domain=mess&cursor={start}", rcvbuf=4096)
        try:
            # More than the headers arrived: the server is sending the backlog, and the
            # client's 4 KiB are full.
            wait_for(lambda: queued_bytes(sock) > 4096, "a full buffer")
            body = orjson.dumps({"event": "tick", "value": 1.5, "tags": ["a", "b"]})
            for _ in range(300):
                response = http.post("/v1/ingest?domain=mess", content=body,
                                     headers={"Content-Type": "application/json"})
                assert response.status_code == 202
            assert metric(http, "leitstand_stream_clients") == 1  # still there, still stuck
            stored = http.get("/v1/domains").json()
            (mess,) = [d for d in stored["domains"] if d["domain"] == "mess"]
            assert mess["events"] == 1 + wmem_max // blob + 16 + 300
        finally:
            sock.close()
        wait_for(lambda: metric(http, "leitstand_stream_clients") == 0, "it to leave")
        assert metric(http, 'leitstand_stream_disconnects_total{reason="slow"}') == 0


def test_open_streams_do_not_stall_a_graceful_shutdown(tmp_path: Path) -> None:
    with running(tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH,
                                                   timeout=10) as http:
        ingest(http, "aussen", {"n": 0})
        with http.stream("GET", "/v1/stream", params={"domain": "aussen"}) as response:
            sse = SSE(response)
            wait_for(lambda: metric(http, "leitstand_stream_clients") == 1, "the stream")
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGTERM)
            _, event, data = sse.events(1)[0]
            assert event == "disconnect"
            assert orjson.loads(data) == {"reason": "the server is shutting down"}
        server.proc.wait(timeout=15)  # uvicorn waits for running responses: ours ended
        assert server.proc.returncode != -signal.SIGKILL


def test_paging_never_splits_lines_of_workers_and_outside_writers(tmp_path: Path) -> None:
    """Two server workers and an outside tool (flock, each line in two writes) append to one
    domain while a reader pages through it: every line arrives once, whole."""
    per_writer = 150
    proc = ServerProcess(tmp_path / "data", token=TOKEN, workers=2)
    try:
        proc.start()
        with httpx.Client(base_url=proc.url, headers=AUTH, timeout=10) as http:
            ingest(http, "geteilt", {"src": "start", "i": -1})

            def outside_tool() -> None:
                fd = os.open(proc.data_dir / "geteilt.jsonl", os.O_WRONLY | os.O_APPEND)
                try:
                    for i in range(per_writer):
                        line = orjson.dumps({"src": "tool", "i": i, "pad": "y" * 300}) + b"\n"
                        fcntl.flock(fd, fcntl.LOCK_EX)
                        os.write(fd, line[:100])
                        time.sleep(0.001)  # a slow writer: half a line is visible meanwhile
                        os.write(fd, line[100:])
                        fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

            def service_client() -> None:
                with httpx.Client(base_url=proc.url, headers=AUTH, timeout=10) as own:
                    for i in range(per_writer):
                        ingest(own, "geteilt", {"src": "http", "i": i})

            writers = [threading.Thread(target=outside_tool),
                       threading.Thread(target=service_client)]
            for thread in writers:
                thread.start()
            seen: list[tuple[str, int]] = []
            cursor = None
            end = time.monotonic() + 60
            try:
                while len(seen) < 2 * per_writer + 1:
                    assert time.monotonic() < end, f"read {len(seen)} lines"
                    params = {"domain": "geteilt", "limit": "7"}
                    if cursor:
                        params["cursor"] = cursor
                    response = http.get("/v1/events", params=params)
                    assert response.status_code == 200, response.text
                    cursor = response.headers["X-Next-Cursor"]
                    for line in response.content.splitlines():
                        event = orjson.loads(line)  # whole lines only: each one parses
                        seen.append((event["src"], event["i"]))
            finally:
                for thread in writers:
                    thread.join(timeout=60)
            assert len(seen) == len(set(seen)) == 2 * per_writer + 1
            for src in ("tool", "http"):
                assert [i for s, i in seen if s == src] == list(range(per_writer))
    finally:
        proc.stop()
