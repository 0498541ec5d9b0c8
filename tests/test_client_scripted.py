"""The client against a real HTTP server on loopback that answers a scripted sequence
(statuses, headers, dropped connections, slow answers): real sockets, real waits."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from leitstand.client import (
    AuthError,
    Client,
    IngestError,
    NetworkError,
    RateLimitedError,
    RejectedError,
    ServerError,
    TooLargeError,
)


@dataclass
class Seen:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedServer:
    """Answers request n with steps[n] (then 202): (status, headers, body), "drop" (close the
    connection without an answer) or ("hang", seconds) (answer 202, but only that late)."""

    steps: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> ScriptedServer:
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                script.seen.append(Seen(time.monotonic(), self.path,
                                        {k.lower(): v for k, v in self.headers.items()}, body))
                step = script.steps.pop(0) if script.steps else (202, {}, None)
                if step == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if isinstance(step, tuple) and step[0] == "hang":
                    script.release.wait(step[1])
                    step = (202, {}, None)
                status, headers, payload = step
                if payload is None:
                    payload = {"status": "accepted", "accepted": 1, "domain": "aussen"}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up on this attempt

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def keys(self) -> list[str | None]:
        return [s.headers.get("idempotency-key") for s in self.seen]


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    try:
        yield server
    finally:
        server.stop()


def client_for(server: ScriptedServer, **kwargs: Any) -> Client:
    settings: dict[str, Any] = {"token": "t", "backoff": 0.01, "timeout": 5.0, **kwargs}
    return Client(server.url, **settings)


def detail(text: str) -> dict[str, str]:
    return {"detail": text}


def test_retries_until_success_with_one_key(scripted: ScriptedServer) -> None:
    scripted.steps = [(503, {}, detail("lock timeout")), (502, {}, detail("bad gateway")),
                      (500, {}, detail("internal error"))]
    with client_for(scripted) as client:
        receipt = client.send("aussen", {"event": "x"})
    assert receipt.attempts == 4 and receipt.status == 202
    assert len(scripted.seen) == 4
    assert scripted.keys() == [receipt.idempotency_key] * 4
    assert {s.body for s in scripted.seen} == {b'{"event":"x"}'}
    assert all(s.path == "/v1/ingest?domain=aussen" for s in scripted.seen)
    assert all(s.headers["x-auth"] == "t" for s in scripted.seen)


def test_gives_up_after_the_configured_retries(scripted: ScriptedServer) -> None:
    scripted.steps = [(503, {}, detail("lock timeout"))] * 5
    with client_for(scripted, retries=2) as client, pytest.raises(ServerError) as caught:
        client.send("aussen", {"event": "x"})
    assert len(scripted.seen) == 3
    assert (caught.value.status, caught.value.detail, caught.value.attempts) == (
        503, "lock timeout", 3)


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [(400, RejectedError, "line 1: invalid JSON"), (401, AuthError, "invalid X-Auth token"),
     (413, TooLargeError, "body larger than 1048576 bytes")],
)
def test_no_retry_on_client_errors(
    scripted: ScriptedServer, status: int, kind: type[IngestError], text: str
) -> None:
    scripted.steps = [(status, {}, detail(text))]
    with client_for(scripted) as client, pytest.raises(kind) as caught:
        client.send("aussen", {"event": "x"})
    assert len(scripted.seen) == 1
    assert (caught.value.status, caught.value.detail) == (status, text)


def test_retry_after_seconds_is_waited_for(scripted: ScriptedServer) -> None:
    scripted.steps = [(429, {"Retry-After": "1"}, detail("rate limit exceeded"))]
    with client_for(scripted) as client:
        client.send("aussen", {"event": "x"})
    first, second = scripted.seen
    assert second.at - first.at >= 1.0  # not earlier than the server asked (backoff is 0.01)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]


def test_retry_after_http_date_is_waited_for(scripted: ScriptedServer) -> None:
    # An HTTP-date has whole seconds: three seconds ahead is more than two from now.
    when = datetime.now(timezone.utc) + timedelta(seconds=3)
    scripted.steps = [(503, {"Retry-After": format_datetime(when, usegmt=True)},
                       detail("lock timeout"))]
    with client_for(scripted) as client:
        client.send("aussen", {"event": "x"})
    first, second = scripted.seen
    assert second.at - first.at >= 1.5


def test_rate_limited_after_retries_carries_retry_after(scripted: ScriptedServer) -> None:
    scripted.steps = [(429, {"Retry-After": "0"}, detail("rate limit exceeded"))] * 3
    with client_for(scripted, retries=2) as client, pytest.raises(RateLimitedError) as caught:
        client.send("aussen", {"event": "x"})
    assert len(scripted.seen) == 3
    assert caught.value.status == 429 and caught.value.retry_after == 0.0
    assert caught.value.detail == "rate limit exceeded"


def test_dropped_connections_are_retried_with_one_key(scripted: ScriptedServer) -> None:
    scripted.steps = ["drop", "drop"]
    with client_for(scripted) as client:
        receipt = client.send("aussen", {"event": "x"})
    assert receipt.attempts == 3
    assert scripted.keys() == [receipt.idempotency_key] * 3


def test_a_timed_out_attempt_is_retried_with_the_same_key(scripted: ScriptedServer) -> None:
    scripted.steps = [("hang", 3.0)]
    with client_for(scripted, timeout=0.3) as client:
        receipt = client.send("aussen", {"event": "x"})
    assert receipt.attempts == 2
    assert len(set(scripted.keys())) == 1 and len(scripted.seen) == 2


def test_network_failure_after_retries(scripted: ScriptedServer) -> None:
    scripted.steps = ["drop"] * 3
    with client_for(scripted, retries=2) as client, pytest.raises(NetworkError) as caught:
        client.send("aussen", {"event": "x"})
    assert caught.value.status is None and caught.value.attempts == 3
    assert len(scripted.seen) == 3


def test_nothing_listening_is_a_network_error() -> None:
    server = ScriptedServer().start()
    url = server.url
    server.stop()
    with Client(url, "t", retries=1, backoff=0.01) as client, \
            pytest.raises(NetworkError) as caught:
        client.send("aussen", {"event": "x"})
    assert caught.value.attempts == 2 and "no answer" in str(caught.value)
