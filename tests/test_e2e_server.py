"""End-to-end against the real server (`uvicorn app:app`, as the README starts it): real sockets,
real `.env`, real `make`, real curl, the real stderr log."""

from __future__ import annotations

import fcntl
import gzip
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from testing import ROOT, ServerProcess, free_port, stop_process_group

from .conftest import TOKEN

ACCESS = re.compile(
    r"\S+ \S+ INFO leitstand\.access request_id=(?P<id>\S+) client=\S+ token=\S+ "
    r"method=(?P<method>\S+) "
    r"path=(?P<path>\S+) status=(?P<status>\d{3}) duration_ms=\d+\.\d"
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[ServerProcess]:
    """One server for the tests that only add to their own domain (server start is slow)."""
    proc = ServerProcess(tmp_path_factory.mktemp("shared") / "data")
    try:
        yield proc.start()
    finally:
        proc.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def raw_request(port: int, head: bytes, body_parts: list[bytes] = (), timeout: float = 20.0
                ) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given over a socket; return status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            # Stop sending once the server has answered (e.g. 413 mid-body): read the answer
            # before the server's close of a half-read connection can reset it.
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header_blob, _, rest = data.partition(b"\r\n\r\n")
        lines = header_blob.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:length]


def post_head(path: str, *extra: bytes, token: bytes = TOKEN.encode()) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"X-Auth: " + token,
             *extra, b"", b""]
    return b"\r\n".join(lines)


def stored(server: ServerProcess, file: str = "aussen.jsonl") -> list[dict]:
    path = server.data_dir / file
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


# -- starting the service as the README says -------------------------------------------------
def readme_block(containing: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        if containing in block:
            return block
    raise AssertionError(f"README.md has no bash block with {containing!r}")


def test_readme_curl_example_lands_in_data_aussen_jsonl(tmp_path) -> None:
    """A fresh working directory with `.env` copied from `.env.example` (token `dev`), nothing
    in the environment: the README's curl command stores the event in ./data/aussen.jsonl."""
    cwd = tmp_path / "checkout"
    cwd.mkdir()
    shutil.copy(ROOT / ".env.example", cwd / ".env")
    server = ServerProcess(cwd / "data", token=None, cwd=cwd,
                           env={"LEITSTAND_DATA_DIR": None, "LEITSTAND_RATE_LIMIT": None})
    try:
        server.start()
        assert (cwd / "data").is_dir()  # created at start, before any request
        curl = readme_block('curl -X POST "http://localhost:8788/ingest/aussen"')
        curl = curl.replace("8788", str(server.port))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEITSTAND_")}
        out = subprocess.run(["bash", "-c", curl], cwd=cwd, env=env, capture_output=True,
                             timeout=30, check=True)
        assert out.stdout == b"ok"
        assert (cwd / "data" / "aussen.jsonl").read_bytes() == (
            b'{"event":"demo","status":"ok","domain":"aussen"}\n')
        # The token is `dev` from .env: another one is refused.
        denied = httpx.post(f"{server.url}/ingest/aussen", json={}, headers={"X-Auth": TOKEN})
        assert denied.status_code == 401
    finally:
        server.stop()


def test_make_dev_serves_the_readme_example(tmp_path) -> None:
    """`make dev` (README's first command) with the venv that runs the tests: the service on
    the given port with the dev token (or the one in .env). The venv step is skipped (-o)."""
    port, venv = free_port(), Path(sys.prefix)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LEITSTAND_") and k not in ("LOG_LEVEL", "PORT")}
    env["LEITSTAND_DATA_DIR"] = str(tmp_path / "data")
    dotenv = ROOT / ".env"
    token = "dev"
    if dotenv.exists():  # a developer's checkout: make dev takes the token from there
        found = re.findall(r"^LEITSTAND_TOKEN=(.*)$", dotenv.read_text(), re.M)
        token = found[-1] if found and found[-1] else "dev"
    log = (tmp_path / "make-dev.log").open("wb")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(ROOT), "-o", f"{venv}/.runtime", "dev",
         f"PORT={port}", f"VENV={venv}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "make-dev.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=60, what="make dev")
        response = httpx.post(f"http://127.0.0.1:{port}/ingest/aussen",
                              content=b'{"event": "demo", "status": "ok"}',
                              headers={"Content-Type": "application/json", "X-Auth": token})
        assert (response.status_code, response.text) == (200, "ok")
        assert (tmp_path / "data" / "aussen.jsonl").read_bytes() == (
            b'{"event":"demo","status":"ok","domain":"aussen"}\n')
    finally:
        stop_process_group(proc)
        log.close()


def test_make_ingest_test_against_the_server(server: ServerProcess) -> None:
    env = {**os.environ, "LEITSTAND_TOKEN": TOKEN}
    out = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "ingest-test",
                          f"PORT={server.port}"], env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert orjson.loads(out.stdout) == {"status": "accepted", "accepted": 1, "domain": "aussen"}
    assert stored(server) == [{"event": "ingest-test", "status": "ok", "domain": "aussen"}]


def test_make_ingest_test_takes_token_and_port_from_dotenv(server: ServerProcess,
                                                          tmp_path) -> None:
    cwd = tmp_path / "checkout"
    cwd.mkdir()
    (cwd / ".env").write_text(f"LEITSTAND_TOKEN={TOKEN}\nPORT={server.port}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LEITSTAND_TOKEN", "PORT")}
    out = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"),
                          "ingest-test"], cwd=cwd, env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert len(stored(server)) == 1


def test_make_ingest_test_fails_loudly_on_a_wrong_token(server: ServerProcess) -> None:
    env = {**os.environ, "LEITSTAND_TOKEN": "wrong"}
    out = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "ingest-test",
                          f"PORT={server.port}"], env=env, capture_output=True, timeout=60)
    assert out.returncode != 0
    assert b"invalid X-Auth token" in out.stdout


def run_uvicorn(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("LEITSTAND_") and k != "LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(ROOT), "--port",
         str(free_port()), "--host", "127.0.0.1"],
        cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=60,
    )


def test_refuses_to_start_without_token_and_says_how(tmp_path) -> None:
    out = run_uvicorn(tmp_path, {})
    assert out.returncode != 0
    assert "LEITSTAND_TOKEN is not set" in out.stderr
    assert "export LEITSTAND_TOKEN=" in out.stderr and ".env" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [("LEITSTAND_MAX_BODY", "lots"), ("LEITSTAND_RATE_LIMIT", "often"), ("LOG_LEVEL", "LOUD"),
     ("LEITSTAND_LOCK_TIMEOUT", "-3")],
)
def test_refuses_to_start_with_an_invalid_value(tmp_path, name, value) -> None:
    out = run_uvicorn(tmp_path, {"LEITSTAND_TOKEN": "t", name: value})
    assert out.returncode != 0
    assert f"{name} is invalid" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_data_dir_that_cannot_be_created_is_named(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    out = run_uvicorn(tmp_path, {"LEITSTAND_TOKEN": "t",
                                 "LEITSTAND_DATA_DIR": str(tmp_path / "file" / "data")})
    assert out.returncode != 0
    assert "LEITSTAND_DATA_DIR is invalid: cannot create" in out.stderr
    assert "Traceback" not in out.stderr


def test_invalid_value_in_dotenv_is_named(tmp_path) -> None:
    (tmp_path / ".env").write_text("LEITSTAND_TOKEN=dev\nLEITSTAND_MAX_BODY=1MiB\n")
    out = run_uvicorn(tmp_path, {})
    assert out.returncode != 0
    assert "LEITSTAND_MAX_BODY is invalid" in out.stderr


# -- bodies over real sockets -------------------------------------------------------------------
def test_chunked_upload_without_content_length(shared: ServerProcess) -> None:
    server = shared
    parts = [b'{"n":1}\n{"n"', b':2}\n', b'{"n":3}\n']
    body = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
    status, _, answer = raw_request(server.port, post_head(
        "/v1/ingest?domain=chunked", b"Content-Type: application/x-ndjson",
        b"Transfer-Encoding: chunked"), body)
    assert status == 202, answer
    assert orjson.loads(answer)["accepted"] == 3
    assert [e["n"] for e in stored(server, "chunked.jsonl")] == [1, 2, 3]


def test_chunked_upload_over_the_limit_is_413(start) -> None:
    server = start(env={"LEITSTAND_MAX_BODY": "10000"})
    chunk = b" " * 4000
    body = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 200  # 800 kB offered, 10 kB allowed
    status, _, answer = raw_request(server.port, post_head(
        "/v1/ingest?domain=aussen", b"Content-Type: application/json",
        b"Transfer-Encoding: chunked"), body)
    assert status == 413
    assert orjson.loads(answer) == {"detail": "body larger than 10000 bytes"}
    assert not (server.data_dir / "aussen.jsonl").exists()


def test_content_length_over_the_limit_is_413_without_sending_the_body(start) -> None:
    server = start(env={"LEITSTAND_MAX_BODY": "10000"})
    status, _, answer = raw_request(server.port, post_head(
        "/v1/ingest?domain=aussen", b"Content-Type: application/json",
        b"Content-Length: 50000000"))
    assert status == 413
    assert orjson.loads(answer) == {"detail": "body larger than 10000 bytes"}


def test_gzip_body(shared: ServerProcess) -> None:
    server = shared
    response = httpx.post(
        f"{server.url}/v1/ingest?domain=gzipped",
        content=gzip.compress(b'[{"n":1},{"n":2}]'),
        headers={"X-Auth": TOKEN, "Content-Type": "application/json",
                 "Content-Encoding": "gzip"},
    )
    assert response.status_code == 202
    assert [e["n"] for e in stored(server, "gzipped.jsonl")] == [1, 2]


@pytest.mark.parametrize(
    "token",
    [b"", "tést".encode(), "tést".encode("latin-1"), b"\x80\xff", b"x" * 60_000,
     TOKEN.encode() + b"\xff"],
    ids=["empty", "utf8", "latin1", "high-bytes", "huge", "token-plus-byte"],
)
def test_malformed_x_auth_is_401_never_500(shared: ServerProcess, token) -> None:
    server = shared
    status, _, answer = raw_request(server.port, post_head(
        "/v1/ingest?domain=authcheck", b"Content-Type: application/json", b"Content-Length: 2",
        token=token), [b"{}"])
    assert status == 401, answer
    assert orjson.loads(answer) == {"detail": "invalid X-Auth token"}
    assert not (server.data_dir / "authcheck.jsonl").exists()
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize("route", ["/v1/ingest?domain=authfirst", "/ingest/authfirst"])
def test_auth_is_checked_before_the_body_is_read(shared: ServerProcess, route) -> None:
    """A wrong token is answered at once, though the announced body never comes (if the
    server read the body first, it would wait for it until LEITSTAND_BODY_TIMEOUT, 30 s)."""
    status, _, answer = raw_request(shared.port, post_head(
        route, b"Content-Type: application/json", b"Content-Length: 1000000",
        token=b"wrong"), timeout=15)
    assert status == 401
    assert orjson.loads(answer) == {"detail": "invalid X-Auth token"}


@pytest.mark.parametrize(
    ("body", "ctype"),
    [(b'{"v": NaN}', "application/json"), (b'{"v": Infinity}', "application/json"),
     (b"[" * 50_000 + b"]" * 50_000, "application/json"),
     (b'[1, {"domain": "aussen"}]', "application/json"),
     (b'"x"\n{"domain":"aussen"}\n', "application/x-ndjson"),
     (b'{"e": "\xff"}', "application/json")],
    ids=["nan", "infinity", "deep", "non-object-first", "non-object-ndjson", "bad-utf8"],
)
def test_bad_input_without_domain_is_400_json(shared: ServerProcess, body, ctype) -> None:
    server = shared
    response = httpx.post(f"{server.url}/v1/ingest", content=body,
                          headers={"X-Auth": TOKEN, "Content-Type": ctype})
    assert response.status_code == 400
    assert list(response.json()) == ["detail"]
    assert "Traceback" not in server.log()


def test_longest_domains(shared: ServerProcess) -> None:
    server = shared
    domain = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters
    for route in (f"/v1/ingest?domain={domain}", f"/ingest/{domain}"):
        response = httpx.post(server.url + route, json={"n": 1},
                              headers={"X-Auth": TOKEN, "Idempotency-Key": route[:20]})
        assert response.status_code in (200, 202), response.text
    names = [p.name for p in server.data_dir.rglob("*")]
    assert names and all(len(os.fsencode(n)) <= 255 for n in names), names


# -- rate limit -------------------------------------------------------------------------------
def test_rate_limit_across_routes_counted_before_auth(start) -> None:
    server = start(env={"LEITSTAND_RATE_LIMIT": "4/minute"})
    url = server.url
    with httpx.Client(timeout=10) as http:
        answers = [
            http.post(f"{url}/v1/ingest?domain=aussen", json={}, headers={"X-Auth": "guess1"}),
            http.post(f"{url}/ingest/aussen", json={}, headers={"X-Auth": "guess2"}),
            http.post(f"{url}/ingest/aussen", json={}, headers={"X-Auth": TOKEN}),
            http.post(f"{url}/v1/ingest?domain=innen", json={}, headers={"X-Auth": TOKEN}),
            http.post(f"{url}/v1/ingest?domain=aussen", json={}, headers={"X-Auth": TOKEN}),
            http.post(f"{url}/ingest/x", json={}, headers={"X-Auth": "guess3"}),
        ]
        assert [a.status_code for a in answers] == [401, 401, 200, 202, 429, 429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == [
            "3", "2", "1", "0", "0", "0"]
        for limited in answers[4:]:
            assert limited.json() == {"detail": "rate limit exceeded"}
            assert 1 <= int(limited.headers["Retry-After"]) <= 60
            assert limited.headers["X-RateLimit-Limit"] == "4"
        assert http.get(f"{url}/health").status_code == 200


# -- lock timeout -----------------------------------------------------------------------------
def waiting_for_a_lock(server: ServerProcess) -> bool:
    """The worker waits in flock: the kernel lists a blocked waiter as `-> FLOCK ... <pid>` in
    /proc/locks."""
    (pid,) = server.worker_pids()
    return any(line.split()[1:3] == ["->", "FLOCK"] and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines())


def test_lock_timeout_is_503_and_other_domains_keep_working(start) -> None:
    server = start(env={"LEITSTAND_LOCK_TIMEOUT": "8"})
    headers = {"X-Auth": TOKEN}
    assert httpx.post(f"{server.url}/v1/ingest?domain=aussen", json={"n": 1},
                      headers=headers).status_code == 202
    fd = os.open(server.data_dir / "aussen.jsonl", os.O_RDWR)
    result: dict[str, httpx.Response] = {}
    finished: dict[str, float] = {}
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an outside tool holds the domain's file

        def blocked() -> None:
            result["aussen"] = httpx.post(f"{server.url}/v1/ingest?domain=aussen",
                                          json={"n": 2}, headers=headers, timeout=60)
            finished["aussen"] = time.monotonic()

        thread = threading.Thread(target=blocked)
        thread.start()
        # The request is inside the store, its lock thread waiting for the flock ...
        wait_for(lambda: waiting_for_a_lock(server),
                 what="the blocked request to reach the store")
        # ... and meanwhile the same worker answers everything else.
        for i in range(3):
            other = httpx.post(f"{server.url}/ingest/innen", json={"i": i}, headers=headers,
                               timeout=10)
            assert other.status_code == 200
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        finished["others"] = time.monotonic()
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        os.close(fd)  # releases the flock
    # Had the lock wait blocked the event loop, the others would have been answered only after
    # the blocked request gave up.
    assert finished["others"] < finished["aussen"]
    answer = result["aussen"]
    assert answer.status_code == 503
    assert answer.json() == {"detail": "lock timeout"}
    assert 1 <= int(answer.headers["Retry-After"]) <= 30
    assert len(stored(server, "innen.jsonl")) == 3
    assert [e["n"] for e in stored(server)] == [1]  # nothing of the timed-out batch
    assert httpx.post(f"{server.url}/v1/ingest?domain=aussen", json={"n": 3},
                      headers=headers).status_code == 202
    assert [e["n"] for e in stored(server)] == [1, 3]


# -- access log, metrics, open endpoints, deprecation -----------------------------------------
def access_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log_path.read_text(errors="replace").splitlines()
            if "leitstand.access" in line]


def test_access_log_of_the_real_server(server: ServerProcess) -> None:
    port = server.port
    forged = "request_id=forged client=1.2.3.4 method=GET path=/ status=200 duration_ms=0.1"
    requests = [
        post_head("/v1/ingest?domain=aussen", b"Content-Length: 2", b"X-Request-ID: abc-42"),
        post_head("/ingest/x%0D%0A" + forged.replace(" ", "%20"), b"Content-Length: 2"),
        post_head("/ingest/%1B%5B31mred%1B%5B0m", b"Content-Length: 2"),
        post_head("/ingest/aussen", b"Content-Length: 2", b"X-Request-ID: a b;c"),
        post_head("/ingest/aussen", b"Content-Length: 2", b"X-Request-ID: \xc3\xa4",
                  token=b"wrong"),
    ]
    answers = [raw_request(port, head, [b"{}"]) for head in requests]
    # 404: the forged "path=/" adds a path segment; still logged on one line
    assert [a[0] for a in answers] == [202, 404, 400, 200, 401]
    assert answers[0][1]["x-request-id"] == "abc-42"
    for _, headers, _ in answers[1:]:
        assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    def lines_of_these_requests() -> list[str]:
        # Without the readiness probes (their lines may land a moment after their answers).
        return [line for line in access_lines(server) if "path=/health " not in line]

    wait_for(lambda: len(lines_of_these_requests()) >= len(requests), what="access log lines")
    lines = lines_of_these_requests()
    assert len(lines) == len(requests)  # one line per request, none split, none forged
    parsed = []
    for line in lines:
        match = ACCESS.fullmatch(line)
        assert match, line
        assert all(0x20 <= ord(c) < 0x7F for c in line), line
        parsed.append(match.groupdict())
    assert [p["id"] for p in parsed] == [a[1]["x-request-id"] for a in answers]
    assert [p["status"] for p in parsed] == ["202", "404", "400", "200", "401"]
    assert parsed[0]["path"] == "/v1/ingest"
    assert parsed[1]["path"].startswith("/ingest/x\\x0d\\x0arequest_id=forged")
    log = server.log_path.read_text(errors="replace")
    assert TOKEN not in log and "wrong" not in log
    assert "\x1b" not in log


def test_log_level_warning_suppresses_access_lines(start) -> None:
    server = start(env={"LOG_LEVEL": "WARNING"})
    for _ in range(3):
        assert httpx.post(f"{server.url}/ingest/aussen", json={},
                          headers={"X-Auth": TOKEN}).status_code == 200
    server.stop()  # flushes and closes the log
    assert access_lines(server) == []
    assert len(stored(server)) == 3


def test_metrics_and_open_endpoints(server: ServerProcess) -> None:
    for i in range(3):
        httpx.post(f"{server.url}/v1/ingest?domain=aussen", json={"i": i},
                   headers={"X-Auth": TOKEN})
    httpx.post(f"{server.url}/v1/ingest?domain=aussen", json={}, headers={"X-Auth": "no"})
    for path in ("/health", "/version", "/docs", "/openapi.json", "/metrics"):
        response = httpx.get(server.url + path)  # no X-Auth
        assert response.status_code == 200, path
    text = httpx.get(f"{server.url}/metrics").text
    assert 'leitstand_events_total{domain="aussen"} 3.0' in text
    assert 'leitstand_requests_total{route="/v1/ingest",status="202"} 3.0' in text
    assert 'leitstand_rejections_total{reason="unauthorized"} 1.0' in text
    assert "leitstand_append_seconds_count 3.0" in text
    assert re.search(r'leitstand_bytes_total\{domain="aussen"\} \d+', text)
    assert "swagger" in httpx.get(f"{server.url}/docs").text.lower()


def test_deprecated_route_headers(shared: ServerProcess) -> None:
    from leitstand.http.ingest import LEGACY_HEADERS

    response = httpx.post(f"{shared.url}/ingest/legacy", json={"n": 1},
                          headers={"X-Auth": TOKEN})
    assert (response.status_code, response.text) == (200, "ok")
    for name, value in LEGACY_HEADERS.items():
        assert response.headers[name] == value
    assert re.fullmatch(r"@\d+", response.headers["Deprecation"])
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT",
                        response.headers["Sunset"])
