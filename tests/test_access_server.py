"""Named, scoped tokens against the real server (`uvicorn app:app`, stopped by its PID): the
matrix of tokens x protected routes x in/out of scope, reloads while 16 clients send (by rename
and in place), SIGHUP, a broken file at start and at reload, an open stream cut when its token
is revoked."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from testing import ServerProcess

WRITER, READER, FULL = "garten-writer-secret", "aussen-reader-secret", "full-access-secret"
DEADLINE = 30.0  # any wait on the server, on a loaded machine


def entry(name: str, secret: str, write: list[str], read: list[str]) -> str:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return (f'[[token]]\nname = "{name}"\nsha256 = "{digest}"\nwrite = {write!r}\n'
            f"read = {read!r}\n\n").replace("'", '"')


MATRIX_FILE = ("# the matrix's three tokens\n"
               + entry("garten-writer", WRITER, ["garten.*"], [])
               + entry("aussen-reader", READER, [], ["aussen"])
               + entry("full", FULL, ["*"], ["*"]))


def wait_for(check: Callable[[], bool], what: str, deadline: float = DEADLINE) -> float:
    """Poll `check` until true; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < deadline, f"not within {deadline}s: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(MATRIX_FILE)
    return path


def start_with(start_server: Callable[..., ServerProcess], tokens_file: Path,
               **env: str) -> ServerProcess:
    """A server with only the file's tokens (no LEITSTAND_TOKEN)."""
    return start_server(token=None, env={"LEITSTAND_TOKENS_FILE": str(tokens_file),
                                         "LEITSTAND_READ_RATE_LIMIT": "1000000/second", **env})


def files_of(data_dir: Path) -> dict[str, int]:
    """Every file under the data dir (helper files included) with its size."""
    return {str(p.relative_to(data_dir)): p.stat().st_size
            for p in sorted(data_dir.rglob("*")) if p.is_file()}


# -- the matrix ------------------------------------------------------------------------------------
# (method, path, body): `{d}` is the domain of the case.
ROUTES = {
    "ingest": ("POST", "/v1/ingest?domain={d}", {"n": 1}),
    "ingest-batch": ("POST", "/v1/ingest", [{"domain": "{d}", "n": 1}, {"domain": "{d}", "n": 2}]),
    "legacy": ("POST", "/ingest/{d}", {"n": 1}),
    "domains": ("GET", "/v1/domains", None),
    "events": ("GET", "/v1/events?domain={d}", None),
    "stream": ("GET", "/v1/stream?domain={d}&tail=1", None),
    "rejections": ("GET", "/v1/rejections", None),
    "whoami": ("GET", "/v1/whoami", None),
    "schemas": ("GET", "/v1/schemas", None),
    "schema": ("GET", "/v1/schemas/{d}", None),
}
# token → (domain in scope, domain out of scope) for each route, and the expected statuses.
# A producer's token reads nothing (403 on every read route); `schema` answers 404 where the
# token may see it (no LEITSTAND_SCHEMA_DIR), 403 where not; `schemas` lists what it may see.
EXPECTED = {
    WRITER: {"in": "garten.beet", "out": "keller", "codes": {
        "ingest": (202, 403), "ingest-batch": (202, 403), "legacy": (200, 403),
        "domains": (403, 403), "events": (403, 403), "stream": (403, 403),
        "rejections": (403, 403), "whoami": (403, 403), "schemas": (200, 200),
        "schema": (404, 403)}},
    READER: {"in": "aussen", "out": "keller", "codes": {
        "ingest": (403, 403), "ingest-batch": (403, 403), "legacy": (403, 403),
        "domains": (200, 200), "events": (200, 403), "stream": (200, 403),
        "rejections": (200, 200), "whoami": (200, 200), "schemas": (200, 200),
        "schema": (404, 403)}},
    FULL: {"in": "keller", "out": "nirgends.x", "codes": {
        "ingest": (202, 202), "ingest-batch": (202, 202), "legacy": (200, 200),
        "domains": (200, 200), "events": (200, 200), "stream": (200, 200),
        "rejections": (200, 200), "whoami": (200, 200), "schemas": (200, 200),
        "schema": (404, 404)}},
}


def call(client: httpx.Client, route: str, domain: str, secret: str | None) -> int:
    method, path, body = ROUTES[route]
    url = path.format(d=domain)
    headers = {} if secret is None else {"X-Auth": secret}
    if isinstance(body, list):
        body = [{**item, "domain": domain} for item in body]
    if route == "stream":  # the answer's head is enough; then hang up
        with client.stream(method, url, headers=headers) as response:
            return response.status_code
    return client.request(method, url, headers=headers, json=body).status_code


def test_matrix_of_tokens_routes_and_scopes(start_server, tokens_file) -> None:
    server = start_with(start_server, tokens_file)
    data = server.data_dir
    assert data is not None
    with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
        for domain in ("aussen", "keller", "garten.beet"):  # something to read
            assert call(client, "ingest", domain, FULL) == 202
        seen: list[tuple[str, str, str, int, int]] = []
        for secret, case in EXPECTED.items():
            for route, codes in case["codes"].items():
                for where, expected in zip(("in", "out"), codes, strict=True):
                    before = files_of(data)
                    status = call(client, route, case[where], secret)
                    seen.append((secret, route, where, expected, status))
                    if status >= 400:
                        assert files_of(data) == before, (secret, route, where)
        wrong = [s for s in seen if s[3] != s[4]]
        assert not wrong, wrong
        # Unknown, malformed or missing tokens: 401 everywhere, and nothing written.
        for secret in ("nope", WRITER[:-1], WRITER + "x", None, "x" * 2000):
            for route in ROUTES:
                before = files_of(data)
                assert call(client, route, "garten.beet", secret) == 401, (secret, route)
                assert files_of(data) == before
        # What the reader sees is filtered to its domain.
        listed = client.get("/v1/domains", headers={"X-Auth": READER}).json()["domains"]
        assert [d["domain"] for d in listed] == ["aussen"]
        rejections = client.get("/v1/rejections?limit=1000",
                                headers={"X-Auth": READER}).json()["rejections"]
        assert rejections and {r["domain"] for r in rejections} == {"aussen"}
        full = client.get("/v1/rejections?limit=1000", headers={"X-Auth": FULL}).json()
        reasons = {(r["token"], r["reason"]) for r in full["rejections"]}
        assert ("garten-writer", "token 'garten-writer' may not write domain 'keller'") in reasons
        assert (None, "invalid X-Auth token") in reasons
        metrics = client.get("/metrics").text
    assert ('leitstand_token_rejections_total{reason="forbidden",token="garten-writer"}'
            in metrics)
    log = server.log_path.read_text(errors="replace")
    for secret in (WRITER, READER, FULL):
        assert secret not in log and secret not in metrics
    assert "token=garten-writer" in log and "token=aussen-reader" in log


# -- reloads under load ----------------------------------------------------------------------------
STABLE, OLD, NEW = "stable-secret-0", "old-secret-1", "new-secret-2"


class Senders:
    """16 clients sending with the STABLE token, which every version of the file has: a request
    judged by a half-written file (one without STABLE) would be refused."""

    def __init__(self, url: str, count: int = 16) -> None:
        self.url = url
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                        for n in range(count)]

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=DEADLINE) as client:
            while not self.stop.is_set():
                try:
                    status = client.post(f"/v1/ingest?domain=last.c{n}", json={"n": n},
                                         headers={"X-Auth": STABLE}).status_code
                except httpx.HTTPError:
                    status = -1
                with self.lock:
                    self.statuses.append(status)

    def __enter__(self) -> Senders:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(DEADLINE)


def status_with(server: ServerProcess, secret: str) -> int:
    return httpx.get(server.url + "/v1/whoami", headers={"X-Auth": secret},
                     timeout=DEADLINE).status_code


def version(*names: str) -> str:
    secrets = {"stable": STABLE, "old": OLD, "new": NEW}
    return "# tokens\n" + "".join(entry(n, secrets[n], ["*"], ["*"]) for n in names)


def test_reload_while_16_clients_send_by_rename_and_in_place(start_server, tmp_path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(version("stable", "old"))
    server = start_with(start_server, path)
    assert status_with(server, OLD) == 200 and status_with(server, NEW) == 401
    with Senders(server.url) as senders:
        wait_for(lambda: len(senders.statuses) > 100, "the clients are sending")

        # 1. Atomically, by rename: `new` in, `old` out.
        temp = tmp_path / "tokens.toml.tmp"
        temp.write_text(version("stable", "new"))
        os.replace(temp, path)
        switched = time.monotonic()
        wait_for(lambda: status_with(server, NEW) == 200, "the new token accepted")
        wait_for(lambda: status_with(server, OLD) == 401, "the removed token refused")
        took_rename = time.monotonic() - switched

        # 2. In place, the way an editor without atomic saves writes: truncate, then the file
        # in pieces. The first piece alone is a valid file without `stable`.
        pieces = [version("old"), version("new").replace("# tokens\n", ""),
                  version("stable").replace("# tokens\n", "")]
        with open(path, "r+") as f:
            f.truncate(0)
            for piece in pieces:
                f.write(piece)
                f.flush()
                time.sleep(0.25)  # well below the 1 s a change must settle
        switched = time.monotonic()
        wait_for(lambda: status_with(server, OLD) == 200, "the re-added token accepted")
        took_in_place = time.monotonic() - switched
        wait_for(lambda: len(senders.statuses) > 2 * 100, "more requests after the rewrite")
    print(f"new token in force after {took_rename:.1f} s (rename), {took_in_place:.1f} s "
          f"(in place); {len(senders.statuses)} requests")
    assert took_rename < 5 and took_in_place < 5, (took_rename, took_in_place)
    assert status_with(server, NEW) == 200  # all three are in the whole file
    counts = {s: senders.statuses.count(s) for s in set(senders.statuses)}
    assert set(counts) == {202}, counts  # no 5xx, no 401: never a half-written file in force


def full_log(server: ServerProcess) -> str:
    return server.log_path.read_text(errors="replace")


def reloaded_lines(server: ServerProcess) -> int:
    return full_log(server).count(": reloaded")


def test_sighup_reloads_at_once_and_a_broken_file_keeps_the_old_set(start_server,
                                                                    tmp_path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(version("stable", "old"))
    server = start_with(start_server, path)
    assert server.proc is not None
    with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
        assert client.get("/health").json()["tokens"]["file"] == "ok"
        # No request between the change and the reload: only the signal can have loaded it
        # (the file is looked at on requests, and a fresh change first has to settle).
        before = reloaded_lines(server)
        path.write_text(version("stable", "new"))
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for(lambda: reloaded_lines(server) > before, "the reload after SIGHUP")
        assert status_with(server, NEW) == 200 and status_with(server, OLD) == 401
        assert server.running()  # SIGHUP did not end it

        # A broken file: the previous set stays, and says so in /health, metrics and the log.
        path.write_text(version("stable") + '[[token]]\nname = "kaputt"\nwrite = ["*"]\n')
        broken_line = version("stable").count("\n") + 1
        wait_for(lambda: "error" in client.get("/health").json()["tokens"], "the failed reload")
        health = client.get("/health").json()
        assert health["status"] == "ok"
        assert health["tokens"]["error"].startswith(f"line {broken_line}: sha256 must be")
        assert status_with(server, NEW) == 200 and status_with(server, STABLE) == 200
        metrics = client.get("/metrics").text
        assert "leitstand_tokens_file_ok 0.0" in metrics
        assert "leitstand_tokens_reload_failures_total 1.0" in metrics
        assert (f"{path}: reload failed, keeping the previous version: line {broken_line}: "
                "sha256 must be") in full_log(server)
        # Repaired: in force again.
        path.write_text(version("stable", "old"))
        wait_for(lambda: status_with(server, OLD) == 200, "the repaired file")
        assert client.get("/health").json()["tokens"]["file"] == "ok"
        assert "leitstand_tokens_file_ok 1.0" in client.get("/metrics").text


def test_a_broken_file_or_no_token_at_start_refuses_to_start(tmp_path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(version("stable") + '[[token]]\nname = "a"\nsha256 = "nope"\nwrite = []\n')
    broken = ServerProcess(tmp_path / "data", token=None,
                           env={"LEITSTAND_TOKENS_FILE": str(path)})
    with pytest.raises(RuntimeError) as info:
        broken.start(timeout=DEADLINE)
    broken.stop()
    line = version("stable").count("\n") + 3
    assert f"LEITSTAND_TOKENS_FILE is invalid: {path}, line {line}: sha256 must be" in str(
        info.value)
    neither = ServerProcess(tmp_path / "data2", token=None, cwd=tmp_path)
    with pytest.raises(RuntimeError) as info:
        neither.start(timeout=DEADLINE)
    neither.stop()
    assert "LEITSTAND_TOKEN is not set, and neither is LEITSTAND_TOKENS_FILE" in str(info.value)
    assert "export LEITSTAND_TOKEN=" in str(info.value)
    assert "LEITSTAND_TOKENS_FILE=" in str(info.value)


# -- a stream whose token is revoked ---------------------------------------------------------------
def follow(server: ServerProcess, secret: str, domain: str) -> tuple[list[str], threading.Event]:
    """Read the stream's lines in a thread; the event is set when the stream has ended."""
    lines: list[str] = []
    ended = threading.Event()

    def run() -> None:
        try:
            with httpx.stream("GET", f"{server.url}/v1/stream?domain={domain}&tail=5",
                              headers={"X-Auth": secret},
                              timeout=httpx.Timeout(DEADLINE, read=DEADLINE)) as response:
                lines.append(f"status {response.status_code}")
                for line in response.iter_lines():
                    lines.append(line)
        except httpx.HTTPError as exc:
            lines.append(f"error {exc!r}")
        finally:
            ended.set()

    threading.Thread(target=run, daemon=True).start()
    return lines, ended


@pytest.fixture
def revocable(start_server, tmp_path) -> Iterator[tuple[ServerProcess, Path]]:
    path = tmp_path / "tokens.toml"
    path.write_text(version("stable") + entry("leser", READER, [], ["aussen"]))
    server = start_with(start_server, path)
    assert httpx.post(f"{server.url}/v1/ingest?domain=aussen", json={"n": 1},
                      headers={"X-Auth": STABLE}, timeout=DEADLINE).status_code == 202
    yield server, path


@pytest.mark.parametrize(("new_entry", "reason"), [
    ("", "token 'leser' was revoked"),
    (entry("leser", READER, [], ["keller"]), "token 'leser' may no longer read domain 'aussen'"),
])
def test_an_open_stream_ends_when_its_token_loses_read_access(revocable, new_entry,
                                                              reason) -> None:
    server, path = revocable
    lines, ended = follow(server, READER, "aussen")
    wait_for(lambda: any('"n":1' in line for line in lines), "the stream's first event")
    temp = path.with_suffix(".tmp")
    temp.write_text(version("stable") + new_entry)
    os.replace(temp, path)
    wait_for(ended.is_set, "the stream ends")
    assert lines[0] == "status 200"
    assert "event: disconnect" in lines
    assert f'data: {{"reason":"{reason}"}}' in lines
    again = httpx.get(f"{server.url}/v1/events?domain=aussen", headers={"X-Auth": READER},
                      timeout=DEADLINE)
    assert again.status_code in (401, 403)  # revoked / no longer in scope
