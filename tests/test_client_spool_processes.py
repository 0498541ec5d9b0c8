"""The spool with real processes: producers (`tests/spool_producer.py`, `leitstand send`), the
real server (`uvicorn app:app`) stopped and started, `leitstand spool flush|status`, kill -9
in the middle of a drain, two producers on one spool, and https with a self-signed CA."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.client import Client, Spool, TLSError
from testing import ROOT, ServerProcess

from .conftest import TOKEN

LEITSTAND = Path(sys.executable).parent / "leitstand"
EVENTS = 10_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The real server, not started yet (the producers run while it is down); stopped by PID."""
    proc = ServerProcess(tmp_path / "data", token=TOKEN)
    try:
        yield proc
    finally:
        proc.stop()


def env_for(server: ServerProcess, spool: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LEITSTAND_") and k != "LOG_LEVEL"}
    env.update({"LEITSTAND_URL": server.url, "LEITSTAND_TOKEN": TOKEN,
                "LEITSTAND_SPOOL_DIR": str(spool), "LEITSTAND_RETRIES": "1",
                "LEITSTAND_BACKOFF": "0.02", "LEITSTAND_MAX_BACKOFF": "0.3",
                "LEITSTAND_MAX_EVENTS": "100", **extra})
    return env


def producer(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.spool_producer", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def finish(proc: subprocess.Popen[bytes], timeout: float = 300) -> dict[str, object]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        raise
    assert proc.returncode == 0, err.decode()
    return dict(json.loads(out))


def leitstand(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LEITSTAND), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def stored(server: ServerProcess) -> list[tuple[str, int]]:
    path = server.data_dir / "spool.jsonl"
    if not path.exists():
        return []
    return [(line["p"], line["n"]) for line in map(orjson.loads, path.read_bytes().splitlines())]


def assert_each_once(lines: list[tuple[str, int]], expected: set[tuple[str, int]]) -> None:
    counts = Counter(lines)
    assert set(counts) == expected, (len(counts), len(expected))
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1][:5]


def spool_all(server: ServerProcess, spool: Path, **extra: str) -> None:
    """With the server down, one producer sends EVENTS events: every one is spooled."""
    assert not server.running()
    summary = finish(producer(["send", "0", str(EVENTS), "a"], env_for(server, spool, **extra)))
    assert summary["events"] == 0 and summary["spooled_events"] == EVENTS
    assert Spool(spool, 10**9).status().entries == summary["spooled_batches"]


def test_spooled_while_down_then_flush_stores_each_event_once_in_order(
    server: ServerProcess, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool_all(server, spool)
    status = leitstand(["spool", "status", "--spool", str(spool)], env_for(server, spool))
    assert status.returncode == 0, status.stderr
    assert "entries:  100" in status.stdout and "oldest:" in status.stdout
    assert "last error:" in status.stdout and "ConnectError" in status.stdout
    server.start()
    flushed = leitstand(["spool", "flush"], env_for(server, spool))
    assert flushed.returncode == 0, flushed.stderr
    assert f"sent {EVENTS} events in 100 batches" in flushed.stdout
    assert stored(server) == [("a", n) for n in range(EVENTS)]  # each once, in order
    assert Spool(spool, 10**9).status().entries == 0


def test_the_background_drain_stores_each_event_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool_all(server, spool)
    server.start()
    assert finish(producer(["drain"], env_for(server, spool))) == {"drained": True}
    assert stored(server) == [("a", n) for n in range(EVENTS)]


def test_kill_9_in_the_middle_of_a_drain_and_run_again_stores_each_event_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool_all(server, spool, LEITSTAND_MAX_EVENTS="10")  # 1,000 batches: a drain takes a while
    server.start()
    for kill_at in (2_000, 6_000):
        proc = producer(["drain"], env_for(server, spool))
        deadline = time.monotonic() + 120
        while len(stored(server)) < kill_at and proc.poll() is None:
            assert time.monotonic() < deadline, "the drain did not get going"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the drain ended before it was killed"
        assert Spool(spool, 10**9).status().entries > 0
    assert finish(producer(["drain"], env_for(server, spool))) == {"drained": True}
    assert_each_once(stored(server), {("a", n) for n in range(EVENTS)})


def test_a_full_spool_raises_and_nothing_is_lost(server: ServerProcess, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(b'{"n": %d, "p": "a"}\n' % n for n in range(200)))
    env = env_for(server, spool, LEITSTAND_SPOOL_MAX_BYTES="1500")
    command = ["send", "spool", "--file", str(events), "--batch-events", "10", "--spool",
               str(spool)]
    full = leitstand(command, env)
    assert full.returncode == 1
    assert "is full" in full.stderr and "LEITSTAND_SPOOL_MAX_BYTES=1500" in full.stderr
    assert "neither stored nor spooled" in full.stderr
    kept = Spool(spool, 1500).status().entries
    assert 1 <= kept < 20
    server.start()
    assert leitstand(["spool", "flush", "--spool", str(spool)], env).returncode == 0
    assert stored(server) == [("a", n) for n in range(10 * kept)]  # what was spooled, once
    again = leitstand(command, env)  # the re-run the message asks for sends the rest
    assert again.returncode == 0, again.stderr
    assert stored(server) == [("a", n) for n in range(200)]


def test_send_with_spool_says_what_it_spooled(server: ServerProcess, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    result = leitstand(["send", "spool", '{"n": 0, "p": "a"}', "--spool", str(spool)],
                       env_for(server, tmp_path / "unused"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"spooled 1 event for spool in {spool}")
    assert Spool(spool, 10**6).status().entries == 1


def test_two_producers_share_one_spool(server: ServerProcess, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    half = EVENTS // 2
    env = env_for(server, spool, LEITSTAND_MAX_EVENTS="50")
    producers = [producer(["send", str(first), str(half), name], env)
                 for first, name in ((0, "a"), (half, "b"))]
    for proc in producers:
        assert finish(proc)["spooled_events"] == half
    assert Spool(spool, 10**9).status().entries == 200
    server.start()
    drains = [producer(["drain"], env) for _ in range(2)]
    for proc in drains:
        assert finish(proc) == {"drained": True}
    lines = stored(server)
    assert_each_once(lines, {("a", n) for n in range(half)} | {("b", n)
                                                                for n in range(half, EVENTS)})
    for name in "ab":  # each producer's events in the order it sent them
        numbers = [n for p, n in lines if p == name]
        assert numbers == sorted(numbers)


# -- https with a self-signed CA --------------------------------------------------------------
class TLSServer(ServerProcess):
    def __init__(self, data_dir: Path, ca_file: Path, cert: Path, key: Path) -> None:
        super().__init__(data_dir, token=TOKEN,
                         args=["--ssl-keyfile", str(key), "--ssl-certfile", str(cert)])
        self.ca_file = ca_file

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        trusted = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            return httpx.get(self.url + "/health", verify=trusted, timeout=1.0).is_success
        except httpx.HTTPError:
            return False


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TLSServer]:
    import trustme

    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    proc = TLSServer(tmp_path / "data", tmp_path / "ca.pem", tmp_path / "cert.pem",
                     tmp_path / "key.pem")
    try:
        yield proc.start()
    finally:
        proc.stop()


def test_https_with_the_ca_file_works_and_without_it_fails_with_a_clear_tls_error(
    tls_server: TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(tls_server.url, TOKEN, retries=3, backoff=0.01) as client, \
            pytest.raises(TLSError) as untrusted:
        client.send("spool", {"n": 0, "p": "untrusted"})
    assert untrusted.value.attempts == 1  # not retried: waiting does not make it trusted
    assert "certificate" in str(untrusted.value) and "LEITSTAND_CA_FILE" in str(untrusted.value)

    monkeypatch.setenv("LEITSTAND_CA_FILE", str(tls_server.ca_file))
    with Client(tls_server.url, TOKEN) as client:
        assert client.send("spool", {"n": 1, "p": "trusted"}).status == 202
    from tools.hauski_ingest import ingest_event

    assert ingest_event("spool", {"n": 2, "p": "trusted"}, url=tls_server.url,
                        token=TOKEN) == "ok"
    assert stored(tls_server) == [("trusted", 1), ("trusted", 2)]


def test_a_tls_failure_is_never_spooled(tls_server: TLSServer, tmp_path: Path) -> None:
    with Client(tls_server.url, TOKEN, spool_dir=str(tmp_path / "spool")) as client, \
            pytest.raises(TLSError):
        client.send("spool", {"n": 0, "p": "x"})
    assert Spool(tmp_path / "spool", 10**6).status().entries == 0
