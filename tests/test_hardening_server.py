"""Hostile clients against the real server (`uvicorn app:app` as a process, raw sockets on
loopback): lying Content-Length, huge headers, slow bodies, duplicate X-Auth, log injection and
the token in logs. Every wait has a deadline; every server is stopped by its PID."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from testing import ROOT, ServerProcess

from .conftest import TOKEN

DEADLINE = 20.0  # no single exchange may take longer than this (a hang fails the test)
BODY_TIMEOUT = 1.5  # LEITSTAND_BODY_TIMEOUT for the servers of this module


@pytest.fixture
def start(
    start_server: Callable[..., ServerProcess],
) -> Callable[..., ServerProcess]:
    """Real servers with this module's body deadline (and optionally more settings)."""

    def run(env: dict[str, str] | None = None, token: str = TOKEN) -> ServerProcess:
        return start_server(
            token=token, env={"LEITSTAND_BODY_TIMEOUT": str(BODY_TIMEOUT), **(env or {})}
        )

    return run


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (starting one takes seconds); every test uses own domains."""
    proc = ServerProcess(tmp_path_factory.mktemp("hardening") / "data", token=TOKEN,
                         env={"LEITSTAND_BODY_TIMEOUT": str(BODY_TIMEOUT)})
    try:
        yield proc.start()
    finally:
        proc.stop()


class Conn:
    """One raw TCP connection that parses HTTP/1.1 answers itself (so lies are visible)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self, timeout: float = DEADLINE) -> tuple[int, dict[str, str], bytes]:
        """The next answer: status, headers (lower-case names), body."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionError(f"closed without an answer; got {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill(deadline):
                break
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed_by_server(self, timeout: float = DEADLINE) -> bool:
        """Whether the server closes the connection (any further answers are read and dropped)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self._fill(deadline):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


def head(path: str = "/v1/ingest?domain=aussen", *, length: int | None = None,
         extra: bytes = b"", auth: bytes = TOKEN.encode(), close: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1",
             b"Content-Type: application/json", b"X-Auth: " + auth]
    if length is not None:
        lines.append(f"Content-Length: {length}".encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def stored(srv: ServerProcess, domain: str = "aussen") -> list[dict]:
    path = srv.data_dir / f"{domain}.jsonl"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def assert_server_healthy(srv: ServerProcess) -> None:
    assert srv.proc is not None and srv.proc.poll() is None, srv.log()
    assert httpx.get(srv.url + "/health", timeout=DEADLINE).status_code == 200
    assert "Traceback" not in srv.log(), srv.log()


# -- lying Content-Length -----------------------------------------------------------------------
def test_content_length_shorter_than_body(srv: ServerProcess) -> None:
    """The server reads exactly Content-Length bytes (`{"a":` — invalid JSON, the app's 400);
    the rest (`1}`) is no HTTP request: uvicorn's parser answers it with its own plain-text 400
    and closes — when both arrive in one packet, that answer may even come first."""
    conn = Conn(srv.port)
    try:
        conn.send(head("/v1/ingest?domain=short", length=5) + b'{"a":1}\r\n\r\n')
        status, headers, body = conn.response()
        assert status == 400, body
        if headers.get("content-type", "").startswith("application/json"):
            assert "invalid JSON" in orjson.loads(body)["detail"]
        else:
            assert body == b"Invalid HTTP request received."
        assert conn.closed_by_server()
    finally:
        conn.close()
    assert stored(srv, "short") == []
    assert_server_healthy(srv)


def test_content_length_shorter_cannot_smuggle_a_request(srv: ServerProcess) -> None:
    """The bytes after Content-Length form a complete second request; it is parsed as a request
    of its own with its own auth check (it has no X-Auth → 401) and nothing of it is stored."""
    smuggled = (b"POST /v1/ingest?domain=smuggled HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
    conn = Conn(srv.port)
    try:
        conn.send(head("/v1/ingest?domain=smuggle", length=2) + b"{}" + smuggled)
        status, _, body = conn.response()
        assert status == 202, body  # `{}` for ?domain=smuggle: exactly the 2 declared bytes
        status, _, body = conn.response()
        assert status == 401, body
    finally:
        conn.close()
    assert stored(srv, "smuggle") == [{"domain": "smuggle"}]
    assert stored(srv, "smuggled") == []
    assert_server_healthy(srv)


def test_content_length_longer_than_body_times_out_with_408(srv: ServerProcess) -> None:
    conn = Conn(srv.port)
    started = time.monotonic()
    try:
        conn.send(head("/v1/ingest?domain=longer", length=100) + b'{"a":1}')
        status, headers, body = conn.response()
        waited = time.monotonic() - started
        assert status == 408, body
        assert "LEITSTAND_BODY_TIMEOUT" in orjson.loads(body)["detail"]
        assert headers["connection"] == "close"
        assert waited >= BODY_TIMEOUT * 0.9  # not before the deadline (no upper bound asserted)
        assert conn.closed_by_server()
    finally:
        conn.close()
    assert stored(srv, "longer") == []
    assert_server_healthy(srv)


def test_content_length_longer_then_client_hangs_up(srv: ServerProcess) -> None:
    """Half-close after a short body: the server must notice, store nothing and stay up."""
    conn = Conn(srv.port)
    try:
        conn.send(head("/v1/ingest?domain=hangup", length=100) + b'{"a":1}')
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.closed_by_server()
    finally:
        conn.close()
    assert stored(srv, "hangup") == []
    assert_server_healthy(srv)


# -- slow clients -------------------------------------------------------------------------------
def test_slow_chunked_body_is_cut_off_with_408(srv: ServerProcess) -> None:
    """A chunked body that keeps trickling (one byte, then silence) never reaches the store."""
    conn = Conn(srv.port)
    try:
        conn.send(head("/v1/ingest?domain=chunked", extra=b"Transfer-Encoding: chunked\r\n")
                  + b"1\r\n{\r\n")
        status, _, body = conn.response()
        assert status == 408, body
        assert conn.closed_by_server()
    finally:
        conn.close()
    assert stored(srv, "chunked") == []
    assert_server_healthy(srv)


def test_slow_body_times_out_while_other_domains_and_requests_flow(srv: ServerProcess) -> None:
    slow = [Conn(srv.port) for _ in range(20)]
    try:
        for conn in slow:
            conn.send(head("/v1/ingest?domain=trickle", length=50) + b"{")
        for n in range(5):
            response = httpx.post(f"{srv.url}/v1/ingest?domain=innen", json={"n": n},
                                  headers={"X-Auth": TOKEN}, timeout=DEADLINE)
            assert response.status_code == 202
        for conn in slow:
            assert conn.response()[0] == 408
    finally:
        for conn in slow:
            conn.close()
    assert len(stored(srv, "innen")) == 5
    assert stored(srv, "trickle") == []


# -- headers ------------------------------------------------------------------------------------
def test_duplicate_x_auth_on_the_wire_is_401(srv: ServerProcess) -> None:
    conn = Conn(srv.port)
    try:
        second = b"X-Auth: " + TOKEN.encode() + b"\r\n"
        conn.send(head("/v1/ingest?domain=dupauth", length=7, extra=second, close=True)
                  + b'{"a":1}')
        status, _, body = conn.response()
        assert status == 401
        assert orjson.loads(body) == {"detail": "more than one X-Auth header"}
    finally:
        conn.close()
    assert stored(srv, "dupauth") == []


@pytest.mark.parametrize(
    "extra",
    [
        b"X-Big: " + b"a" * 65536 + b"\r\n",  # one 64 KB header
        b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 60) for i in range(1100)),  # 1100 headers, ~70 KB
        b"X-Auth-Pad: " + b"c" * 65536 + b"\r\n",
    ],
    ids=["one-64k-header", "1100-headers", "64k-near-auth"],
)
def test_64kb_headers_get_a_4xx_or_are_ignored_never_5xx(srv: ServerProcess, extra) -> None:
    """uvicorn's parser (httptools) accepts big header blocks; the app ignores unknown headers.
    What must never happen: a 5xx, a crash, or the request being stored without auth."""
    conn = Conn(srv.port)
    try:
        conn.send(head("/v1/ingest?domain=bighead", length=7, extra=extra, close=True) + b'{"a":1}')
        try:
            status, _, body = conn.response()
        except (ConnectionError, OSError):
            status, body = 0, b""  # the server may drop the connection instead: also fine
        assert status < 500, body
        assert status in (0, 202, 400, 413, 431), (status, body)
    finally:
        conn.close()
    assert_server_healthy(srv)


def test_64kb_x_auth_header_is_401(srv: ServerProcess) -> None:
    conn = Conn(srv.port)
    try:
        auth = TOKEN.encode() + b"x" * 65536
        conn.send(head("/v1/ingest?domain=bigauth", length=7, auth=auth, close=True)
                  + b'{"a":1}')
        status, _, body = conn.response()
        assert status == 401, body
        assert TOKEN.encode() not in body
    finally:
        conn.close()
    assert stored(srv, "bigauth") == []
    assert_server_healthy(srv)


# -- the token stays secret; logs cannot be forged -----------------------------------------------
def test_token_never_appears_in_log_metrics_or_error_bodies(
    start: Callable[..., ServerProcess],
) -> None:
    current, previous = "Tok-current-7f3a9c", "Tok-previous-51b2e8"
    wrong = "Tok-wrong-guess-0d4e"
    srv = start(env={"LOG_LEVEL": "DEBUG"}, token=f"{current},{previous}")
    bodies = []
    with httpx.Client(base_url=srv.url, timeout=DEADLINE) as client:
        for token in (current, previous, wrong, current + "x", ""):
            for path in ("/v1/ingest?domain=aussen", "/ingest/aussen", "/v1/ingest"):
                response = client.post(path, content=b'{"a":1}',
                                       headers={"X-Auth": token, "Content-Type": "text/plain"})
                bodies.append(response.content + str(response.headers).encode())
                response = client.post(path, json={"a": 1}, headers={"X-Auth": token})
                bodies.append(response.content + str(response.headers).encode())
        bodies.append(client.post("/v1/ingest?domain=aussen", content=b"{",
                                  headers={"X-Auth": current}).content)
        metrics = client.get("/metrics").text
        docs = client.get("/openapi.json").text
    log = srv.log_path.read_text(errors="replace")
    assert "request_id=" in log  # the access log is really there
    for secret in (current, previous, wrong):
        assert secret not in log
        assert secret not in metrics
        assert secret not in docs
        assert all(secret.encode() not in body for body in bodies)
    assert 'leitstand_rejections_total{reason="unauthorized"}' in metrics


LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG|CRITICAL) \S+ .*$"
)
UVICORN_LINE = re.compile(r"^(INFO|WARNING|ERROR|DEBUG):\s+.*$")


def test_log_injection_cannot_forge_or_break_a_line(srv: ServerProcess) -> None:
    forged = "2026-01-01 00:00:00,000 INFO leitstand.access request_id=FORGED"
    attacks = [
        # percent-encoded CR/LF/ESC in the path: decoded into scope["path"] by the server
        "/v1/ingest%0d%0a" + forged.replace(" ", "%20") + "?domain=aussen",
        "/ingest/aussen%0a" + forged.replace(" ", "%20"),
        "/%1b[31mred%1b[0m%0d%0a" + forged.replace(" ", "%20"),
        "/ingest/%1b%5b2J%0aFORGED",  # as a domain: invalid, 400
        "/v1/ingest?domain=aussen%0d%0aFORGED",
        "/v1/ingest%e2%80%a8FORGED%c2%85FORGED",  # Unicode line and next-line separators
    ]
    with httpx.Client(base_url=srv.url, timeout=DEADLINE) as client:
        for path in attacks:
            response = client.post(path, json={"a": 1}, headers={
                "X-Auth": TOKEN, "X-Request-ID": b"FORGED\tx", "User-Agent": b"FORGED\xff",
            })
            assert response.status_code < 500
            assert len(response.headers["x-request-id"]) == 32  # not the client's
        # an event whose domain field carries the attack: rejected, and not logged raw
        response = client.post("/v1/ingest", json={"domain": "a\r\nFORGED\x1b[0m"},
                               headers={"X-Auth": TOKEN})
        assert response.status_code == 400
    # raw control bytes in the request target or a header value: uvicorn's parser refuses them
    for raw in (b"GET /health\x1b[31m HTTP/1.1\r\nHost: x\r\n",
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\x1b[2Jb\r\n",
                b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: a\rFORGED\r\n"):
        conn = Conn(srv.port)
        try:
            conn.send(raw + b"Connection: close\r\n\r\n")
            try:
                status = conn.response()[0]
            except (ConnectionError, OSError):
                status = 0
            assert status in (0, 400)
        finally:
            conn.close()
    log = srv.log_path.read_bytes()
    assert b"\x1b" not in log
    assert b"\r" not in log
    text = log.decode()
    assert text.count("FORGED") >= 5  # the attack text is logged, but escaped inside one line
    for line in text.splitlines():
        assert LOG_LINE.match(line) or UVICORN_LINE.match(line), line
        assert not line.startswith("2026-01-01"), line
        if "FORGED" in line:
            assert "leitstand.access request_id=" in line, line
    assert "\\x0d\\x0a2026-01-01" in text
    assert "\\u2028FORGED\\x85FORGED" in text


# -- slow headers: the head deadline of leitstand.headertimeout ----------------------------------
HEADER_TIMEOUT = 1.5
# the uvicorn options docs/operations.md recommends on an open network
GUARDED = ["--http", "leitstand.headertimeout:HeaderTimeoutProtocol", "--no-proxy-headers"]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server as docs/operations.md recommends it on an open network: with the head
    deadline."""
    proc = ServerProcess(tmp_path_factory.mktemp("guarded") / "data", token=TOKEN,
                         env={"LEITSTAND_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
                              "LEITSTAND_BODY_TIMEOUT": str(HEADER_TIMEOUT * 4),
                              "LEITSTAND_RATE_LIMIT": "100000/hour"},
                         args=GUARDED)
    try:
        yield proc.start()
    finally:
        proc.stop()


def assert_cut_off_with_408(conn: Conn, started: float) -> None:
    status, headers, body = conn.response()
    assert status == 408, body
    assert "LEITSTAND_HEADER_TIMEOUT" in orjson.loads(body)["detail"]
    assert headers["connection"] == "close"
    assert time.monotonic() - started >= HEADER_TIMEOUT * 0.9
    assert conn.closed_by_server()


def test_connection_that_sends_nothing_is_closed_after_the_head_deadline(
    guarded: ServerProcess,
) -> None:
    conn = Conn(guarded.port)
    try:
        assert_cut_off_with_408(conn, time.monotonic())
    finally:
        conn.close()


def test_slowloris_head_is_cut_off_even_while_bytes_keep_coming(guarded: ServerProcess) -> None:
    """One header byte every 0.2 s: each byte would reset an idle timer, not this deadline."""
    conn = Conn(guarded.port)
    started = time.monotonic()
    head_bytes = head("/v1/ingest?domain=slowloris", length=7)
    try:
        for n, byte in enumerate(head_bytes):
            try:
                conn.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() - started > HEADER_TIMEOUT + 15:
                raise AssertionError(f"still open after {n} bytes")
            time.sleep(0.2)  # pacing the attack, not synchronisation
        assert_cut_off_with_408(conn, started)
    finally:
        conn.close()
    assert stored(guarded, "slowloris") == []


def test_second_request_on_a_keep_alive_connection_has_its_own_head_deadline(
    guarded: ServerProcess,
) -> None:
    conn = Conn(guarded.port)
    try:
        conn.send(head("/v1/ingest?domain=keepalive", length=7) + b'{"a":1}')
        assert conn.response()[0] == 202
        started = time.monotonic()
        conn.send(b"POST /v1/ingest?domain=keepalive HTTP/1.1\r\nHost: x\r\n")  # and no more
        assert_cut_off_with_408(conn, started)
    finally:
        conn.close()
    assert stored(guarded, "keepalive") == [{"a": 1, "domain": "keepalive"}]


def test_guarded_server_serves_normal_and_slow_body_requests(guarded: ServerProcess) -> None:
    """The head deadline does not cut a request whose head is complete: a body that takes longer
    than the head deadline (but less than the body deadline) is still stored."""
    conn = Conn(guarded.port)
    try:
        conn.send(head("/v1/ingest?domain=guarded", length=8) + b'{"n":')
        time.sleep(HEADER_TIMEOUT + 0.5)  # the condition under test: past the head deadline
        conn.send(b'-1}')
        assert conn.response()[0] == 202
    finally:
        conn.close()
    with httpx.Client(base_url=guarded.url, timeout=DEADLINE) as client:
        for n in range(3):  # keep-alive: several requests on one connection
            response = client.post("/v1/ingest?domain=guarded", json={"n": n},
                                   headers={"X-Auth": TOKEN})
            assert response.status_code == 202
    assert [e["n"] for e in stored(guarded, "guarded")] == [-1, 0, 1, 2]
    assert_server_healthy(guarded)


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"X-Big: " + b"a" * 65536 + b"\r\n", 431),
        (b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 60) for i in range(1100)), 431),
        (b"X-Big: " + b"a" * (8 << 20) + b"\r\n", 431),  # 8 MiB: refused long before the end
        (b"X-Fits: " + b"a" * 60000 + b"\r\n", 202),
    ],
    ids=["one-64k-header", "1100-headers", "8MiB-header", "60k-header-fits"],
)
def test_guarded_server_refuses_heads_over_64k_with_431(guarded: ServerProcess, extra, status
                                                        ) -> None:
    conn = Conn(guarded.port)
    try:
        # the server may close while we are still sending: its answer is waiting anyway
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(head("/v1/ingest?domain=bighead", length=7, extra=extra) + b'{"a":1}')
        got, _, body = conn.response()
        assert got == status, body
        if status == 431:
            assert b"larger than 65536 bytes" in body
            assert conn.closed_by_server()
    finally:
        conn.close()
    assert_server_healthy(guarded)


def test_spoofed_forwarded_for_from_loopback_is_ignored(guarded: ServerProcess) -> None:
    """uvicorn's own proxy-header handling trusts X-Forwarded-For from 127.0.0.1 by default;
    with --no-proxy-headers only LEITSTAND_TRUSTED_PROXIES (empty here) decides: a fresh
    X-Forwarded-For per request does not buy a fresh rate-limit budget."""
    with httpx.Client(base_url=guarded.url, timeout=DEADLINE) as client:
        left = []
        for n in range(4):
            response = client.post("/v1/ingest?domain=spoof", json={"n": n}, headers={
                "X-Auth": TOKEN, "X-Forwarded-For": f"198.51.100.{n}"})
            assert response.status_code == 202
            left.append(int(response.headers["x-ratelimit-remaining"]))
    assert left == sorted(left, reverse=True) and len(set(left)) == 4, left
    assert "client=198.51.100" not in guarded.log()


def test_many_idle_connections_do_not_block_others_and_are_closed(guarded: ServerProcess) -> None:
    """300 connections that send nothing: a normal request is still served, and the head
    deadline closes every idle one (so they cannot pile up until the process runs out of fds)."""
    idle = [Conn(guarded.port) for _ in range(300)]
    try:
        response = httpx.post(f"{guarded.url}/v1/ingest?domain=idle", json={"ok": True},
                              headers={"X-Auth": TOKEN}, timeout=DEADLINE)
        assert response.status_code == 202
        for conn in idle:
            assert conn.response()[0] == 408
            assert conn.closed_by_server()
    finally:
        for conn in idle:
            conn.close()
    assert_server_healthy(guarded)


def test_docs_recommend_the_options_these_tests_run_with() -> None:
    """docs/operations.md's open-network command has them; the README points there."""
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = operations.split("### Starting on an open network\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    recommended = [b for b in blocks if "leitstand.headertimeout:HeaderTimeoutProtocol" in b]
    assert recommended, "docs/operations.md has no bash block with the recommended uvicorn options"
    words = recommended[0].replace("\\\n", " ").split()
    for option in GUARDED:
        assert option in words, option
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/operations.md#starting-on-an-open-network" in readme
    assert (ROOT / "SECURITY.md").exists()


SMUGGLED = (b"0\r\n\r\nPOST /v1/ingest?domain=smuggled2 HTTP/1.1\r\nHost: x\r\nX-Auth: "
            + TOKEN.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
            b"\r\n{\"a\":1}")


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", SMUGGLED),
        (b"Content-Length: 7\r\nContent-Length: 9\r\n", b'{"a":1}xx'),
        (b"Transfer-Encoding: chunked, identity\r\n", b'7\r\n{"a":1}\r\n0\r\n\r\n'),
        (b"Transfer-Encoding : chunked\r\n", b'7\r\n{"a":1}\r\n0\r\n\r\n'),
        (b"Content-Length: -7\r\n", b'{"a":1}'),
        (b"Content-Length: 0x7\r\n", b'{"a":1}'),
    ],
    ids=["CL+TE", "CL+CL", "TE-list", "TE-space", "CL-negative", "CL-hex"],
)
def test_ambiguous_framing_is_400_and_nothing_is_smuggled(srv: ServerProcess, framing, body
                                                          ) -> None:
    """Request-smuggling shapes: uvicorn's parser refuses them before the app sees anything."""
    conn = Conn(srv.port)
    try:
        conn.send(head("/v1/ingest?domain=framing", extra=framing, close=True) + body)
        status, _, answer = conn.response()
        assert status == 400, answer
        assert conn.closed_by_server()
    finally:
        conn.close()
    assert stored(srv, "framing") == []
    assert stored(srv, "smuggled2") == []
    assert_server_healthy(srv)


def test_slow_body_holds_no_lock_fast_request_to_same_domain_succeeds(
    guarded: ServerProcess,
) -> None:
    """A client trickles its body to domain `slowfast`; meanwhile a fast request to the same
    domain is stored and answered. The body is read completely before the store is touched."""
    body = b'{"slow":true}'
    conn = Conn(guarded.port)
    try:
        conn.send(head("/v1/ingest?domain=slowfast", length=len(body)) + body[:5])
        fast = httpx.post(f"{guarded.url}/v1/ingest?domain=slowfast", json={"fast": True},
                          headers={"X-Auth": TOKEN}, timeout=DEADLINE)
        assert fast.status_code == 202
        assert stored(guarded, "slowfast") == [{"fast": True, "domain": "slowfast"}]
        conn.send(body[5:])
        status, _, answer = conn.response()
        assert status == 202, answer
    finally:
        conn.close()
    assert stored(guarded, "slowfast") == [
        {"fast": True, "domain": "slowfast"}, {"slow": True, "domain": "slowfast"}
    ]
