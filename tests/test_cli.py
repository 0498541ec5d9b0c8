"""The installed `leitstand` command, run as a process against the real server process."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import orjson
import pytest

from leitstand.client import Client
from testing import ROOT, ServerProcess, free_port, stop_process_group

from .conftest import TOKEN

LEITSTAND = Path(sys.executable).parent / "leitstand"  # the console script pip installed


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for this module (each test uses its own domain), stopped by PID."""
    proc = ServerProcess(tmp_path_factory.mktemp("cli") / "data", token=TOKEN)
    try:
        yield proc.start()
    finally:
        proc.stop()


def cli_env(url: str | None = None, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LEITSTAND_") and k != "LOG_LEVEL"}
    if url is not None:
        env["LEITSTAND_URL"] = url
    if token is not None:
        env["LEITSTAND_TOKEN"] = token
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], *, stdin: bytes | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(LEITSTAND), *args], env=env, cwd=ROOT, input=stdin,
                            capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def stored(data_dir: Path, domain: str) -> list[dict[str, object]]:
    path = data_dir / f"{domain}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() \
        else []


def ndjson_file(path: Path, count: int) -> Path:
    path.write_bytes(b"".join(b'{"n":%d,"pad":"0123456789abcdef"}\n' % i for i in range(count)))
    return path


def test_command_is_installed() -> None:
    assert LEITSTAND.exists()
    result = run(["--help"], cli_env())
    assert result.returncode == 0 and "send" in result.stdout and "tail" in result.stdout


def test_send_one_event_and_an_array(server: ServerProcess) -> None:
    env = cli_env(server.url)
    one = run(["send", "one", '{"event": "demo"}'], env)
    many = run(["send", "one", '[{"n": 1}, {"n": 2}]'], env)
    assert one.returncode == 0, one.stderr
    assert one.stdout == "stored 1 event in one\n"
    assert many.returncode == 0 and many.stdout.startswith("stored 2 events in one (1 batch)")
    assert stored(server.data_dir, "one") == [
        {"event": "demo", "domain": "one"}, {"n": 1, "domain": "one"},
        {"n": 2, "domain": "one"}]


def test_send_ndjson_from_stdin_in_batches(server: ServerProcess) -> None:
    lines = b"".join(b'{"n":%d}\n' % i for i in range(2_500)) + b"\n\n"
    result = run(["send", "stdin", "--batch-events", "1000"], cli_env(server.url), stdin=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stored 2500 events in stdin (3 batches)")
    assert [e["n"] for e in stored(server.data_dir, "stdin")] == list(range(2_500))


def test_progress_bar_on_request(server: ServerProcess) -> None:
    lines = b"".join(b'{"n":%d}\n' % i for i in range(20_000))
    result = run(["send", "progress", "--progress"], cli_env(server.url), stdin=lines)
    assert result.returncode == 0
    assert "20.0k events [" in result.stderr  # tqdm's counter, on stderr
    quiet = run(["send", "progress"], cli_env(server.url), stdin=lines)
    assert quiet.returncode == 0 and quiet.stderr == ""  # not a terminal: no bar


@pytest.mark.parametrize(
    ("args", "env_change", "status", "starts"),
    [
        (["send", "failures", '{"a":1}'], {"LEITSTAND_TOKEN": "wrong"}, 1,
         "leitstand: HTTP 401: invalid X-Auth token"),
        (["send", "failures", '{"a":1}'], {"LEITSTAND_TOKEN": ""}, 2,
         "leitstand: LEITSTAND_TOKEN is not set"),
        (["send", "failures", "{not json"], {}, 2, "leitstand: the JSON argument is not valid"),
        (["send", "failures", '"text"'], {}, 2, "leitstand: the JSON argument must be an object"),
        (["send", "no domain!", '{"a":1}'], {}, 1, "leitstand: HTTP 400:"),
        (["send", "failures", "--file", "/nonexistent.ndjson"], {}, 2, "leitstand: cannot read"),
        (["send", "failures", "--retries", "abc", '{"a":1}'], {}, 2, "usage: leitstand send"),
        (["tail", "nowhere"], {}, 1, "leitstand: HTTP 404:"),
    ],
)
def test_failures_exit_nonzero_with_a_one_line_reason(
    server: ServerProcess, args: list[str], env_change: dict[str, str], status: int, starts: str
) -> None:
    env = cli_env(server.url)
    env.update(env_change)
    if env.get("LEITSTAND_TOKEN") == "":
        del env["LEITSTAND_TOKEN"]
    result = run(args, env)
    assert result.returncode == status
    assert result.stderr.startswith(starts)
    if not starts.startswith("usage"):
        assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def test_unreachable_server_exits_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(["send", "aussen", '{"a":1}', "--retries", "1", "--backoff", "0.01"],
                 cli_env(url))
    assert result.returncode == 1
    assert result.stderr.startswith("leitstand: after 2 attempts: no answer (ConnectError)")
    assert result.stderr.count("\n") == 1


def test_a_bad_line_stops_with_what_was_stored(server: ServerProcess, tmp_path: Path) -> None:
    path = ndjson_file(tmp_path / "events.ndjson", 25)
    with path.open("ab") as handle:
        handle.write(b"{broken\n")
    result = run(["send", "badline", "--file", str(path), "--batch-events", "10"],
                 cli_env(server.url))
    assert result.returncode == 1
    assert result.stderr.startswith("leitstand: HTTP 400: invalid JSON in line 6")
    assert f"(in the batch of lines 21-26 of {path})" in result.stderr
    assert "(20 events of earlier batches were stored; re-run" in result.stderr
    assert result.stderr.count("\n") == 1
    assert len(stored(server.data_dir, "badline")) == 20


def test_send_file_of_100000_lines_lands_exactly_once(server: ServerProcess,
                                                      tmp_path: Path) -> None:
    path = ndjson_file(tmp_path / "events.ndjson", 100_000)
    result = run(["send", "bulk", "--file", str(path)], cli_env(server.url))
    assert result.returncode == 0, result.stderr
    # the server's default of at most 10,000 events per request: ten batches
    assert result.stdout.startswith("stored 100000 events in bulk (10 batches)")
    assert [e["n"] for e in stored(server.data_dir, "bulk")] == list(range(100_000))


def test_send_file_killed_half_way_and_run_again(server: ServerProcess, tmp_path: Path) -> None:
    path = ndjson_file(tmp_path / "events.ndjson", 100_000)
    data = server.data_dir / "resume.jsonl"
    args = [str(LEITSTAND), "send", "resume", "--file", str(path), "--batch-events", "500"]
    proc = subprocess.Popen(args, env=cli_env(server.url), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # kill once about a quarter of the file is stored (stored lines are ~60 bytes)
        while proc.poll() is None and time.monotonic() < deadline:
            if data.exists() and data.stat().st_size >= 1_500_000:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the first run finished before it was killed"
    landed = len(stored(server.data_dir, "resume"))
    assert 0 < landed < 100_000

    again = run(args[1:], cli_env(server.url))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("stored 100000 events in resume (200 batches, ")
    assert "already stored by an earlier run" in again.stdout
    assert [e["n"] for e in stored(server.data_dir, "resume")] == list(range(100_000))

    third = run(args[1:], cli_env(server.url))
    assert third.returncode == 0
    assert "200 of them (100000 events) already stored" in third.stdout
    assert len(stored(server.data_dir, "resume")) == 100_000


def test_fresh_sends_the_file_again(server: ServerProcess, tmp_path: Path) -> None:
    path = ndjson_file(tmp_path / "events.ndjson", 10)
    env = cli_env(server.url)
    assert run(["send", "fresh", "--file", str(path)], env).returncode == 0
    assert run(["send", "fresh", "--file", str(path)], env).returncode == 0
    assert len(stored(server.data_dir, "fresh")) == 10
    assert run(["send", "fresh", "--file", str(path), "--fresh"], env).returncode == 0
    assert len(stored(server.data_dir, "fresh")) == 20


def test_serve_runs_the_service(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(LEITSTAND), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=cli_env(None, LEITSTAND_DATA_DIR=str(data_dir), LEITSTAND_HEADER_TIMEOUT="1"),
        cwd=tmp_path,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "leitstand serve did not become ready"
            time.sleep(0.05)
        with Client(url, TOKEN) as client:
            assert client.send("aussen", {"event": "served"}).status == 202
        assert stored(data_dir, "aussen") == [{"event": "served", "domain": "aussen"}]
        # hardened as the README recommends: a connection that sends no request head gets 408
        with socket.create_connection(("127.0.0.1", port), timeout=15) as silent:
            answer = silent.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
    finally:
        stop_process_group(proc)
        log.close()
    # uvicorn shuts down gracefully on SIGTERM, then exits with that signal's status
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()


def test_serve_without_token_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run([str(LEITSTAND), "serve", "--port", str(free_port())],
                            env=cli_env(None, token=None), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "LEITSTAND_TOKEN is not set" in result.stderr


def test_tail_prints_the_last_lines(server: ServerProcess) -> None:
    with Client(server.url, TOKEN) as client:
        client.send_many("tail", ({"n": i} for i in range(30)))
    result = run(["tail", "tail", "-n", "5"], cli_env(server.url))
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(line)["n"] for line in result.stdout.splitlines()] == list(
        range(25, 30))


def _reader(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
    for line in stream:
        lines.put(line)


def test_tail_follow_prints_new_events(server: ServerProcess) -> None:
    with Client(server.url, TOKEN) as client:
        client.send_many("follow", ({"n": i} for i in range(3)))
        proc = subprocess.Popen([str(LEITSTAND), "tail", "follow", "-n", "2", "-f"],
                                env=cli_env(server.url), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        lines: queue.Queue[bytes] = queue.Queue()
        reader = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
        reader.start()
        try:
            seen = [orjson.loads(lines.get(timeout=30))["n"] for _ in range(2)]
            client.send_many("follow", ({"n": i} for i in range(3, 6)))
            seen += [orjson.loads(lines.get(timeout=30))["n"] for _ in range(3)]
        finally:
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
            reader.join(timeout=15)
            assert proc.stdout is not None
            proc.stdout.close()
    assert seen == [1, 2, 3, 4, 5]
    assert proc.returncode == 130


def _stderr_on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run the command with stderr on a pseudo-terminal; return what it wrote there."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        proc = subprocess.run([str(LEITSTAND), *args], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=slave, timeout=120)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_for_large_inputs_on_a_terminal(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = cli_env(server.url)
    large = ndjson_file(tmp_path / "large.ndjson", 10_000)
    small = ndjson_file(tmp_path / "small.ndjson", 10)
    assert "10.0k/10.0k" in _stderr_on_a_terminal(["send", "bar", "--file", str(large)], env)
    assert _stderr_on_a_terminal(["send", "bar", "--file", str(small)], env) == ""


def test_send_file_survives_a_server_crash_and_a_re_run(tmp_path: Path) -> None:
    """The server is SIGKILLed mid-send: the command fails (exit 1, one line); after the restart
    the same command completes the file, and it holds every line exactly once."""
    path = ndjson_file(tmp_path / "events.ndjson", 100_000)
    data_dir = tmp_path / "data"
    first = ServerProcess(data_dir, token=TOKEN)
    args = [str(LEITSTAND), "send", "crash", "--file", str(path), "--batch-events", "500",
            "--retries", "0"]
    try:
        first.start()
        proc = subprocess.Popen(args, env=cli_env(first.url), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            data = data_dir / "crash.jsonl"
            while proc.poll() is None and time.monotonic() < deadline:
                if data.exists() and data.stat().st_size >= 1_500_000:
                    break
                time.sleep(0.005)
            first.kill9()
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    finally:
        first.stop()
    assert proc.returncode == 1, err
    message = err.decode()
    assert message.startswith("leitstand: no answer") and message.count("\n") == 1
    assert "re-run the same command to send the rest" in message

    second = ServerProcess(data_dir, token=TOKEN)
    try:
        second.start()
        again = run(args[1:], cli_env(second.url))
    finally:
        second.stop()
    assert again.returncode == 0, again.stderr
    assert "already stored by an earlier run" in again.stdout
    assert [e["n"] for e in stored(data_dir, "crash")] == list(range(100_000))
