"""Schemas with the real server process (`uvicorn app:app`): 202 / 422 / untouched domains, a
broken file at start, a file changed under load (8 clients) and SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from testing import ServerProcess

from .conftest import TOKEN

AUTH = {"X-Auth": TOKEN}
NUMBER = {"type": "object", "properties": {"temperature": {"type": "number"}},
          "required": ["temperature"]}
STRING = {"type": "object", "properties": {"temperature": {"type": "string"}},
          "required": ["temperature"]}


def write_schema(directory: Path, name: str, document: object) -> None:
    """Replace the file atomically, as an editor or config management would."""
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(document) if not isinstance(document, str) else document)
    os.replace(tmp, directory / name)


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "schemas"
    directory.mkdir()
    write_schema(directory, "aussen.schema.json", NUMBER)
    return directory


def test_valid_invalid_and_unaffected_domains(
    start: Callable[..., ServerProcess], schema_dir: Path, tmp_path: Path,
) -> None:
    server = start(env={"LEITSTAND_SCHEMA_DIR": str(schema_dir)})
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        ok = client.post("/v1/ingest?domain=aussen", json={"temperature": 21.5})
        assert ok.status_code == 202, ok.text
        body = b'{"temperature": 1}\n{"temperature": 2}\n{"temperature": "warm"}\n'
        bad = client.post("/v1/ingest?domain=aussen", content=body,
                          headers={"Content-Type": "application/x-ndjson"})
        assert bad.status_code == 422
        assert bad.json()["errors"] == [
            {"index": 2, "path": "/temperature", "message": "'warm' is not of type 'number'"}]
        assert bad.json()["error_count"] == 1
        legacy = client.post("/ingest/aussen", json={"temperature": "warm"})
        assert legacy.status_code == 422 and legacy.json()["errors"][0]["path"] == "/temperature"
        other = client.post("/v1/ingest?domain=innen", json={"temperature": "warm"})
        assert other.status_code == 202
    data = server.data_dir
    assert (data / "aussen.jsonl").read_bytes() == b'{"temperature":21.5,"domain":"aussen"}\n'
    assert (data / "innen.jsonl").read_bytes() == b'{"temperature":"warm","domain":"innen"}\n'


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("aussen.schema.json", "{broken", "aussen.schema.json: invalid JSON"),
    ("garten.*.schema.json", '{"required": "temperature"}',
     "garten.*.schema.json: not a valid schema at /required"),
])
def test_broken_file_at_start_refuses_to_start(
    tmp_path: Path, schema_dir: Path, name: str, content: str, expected: str,
) -> None:
    write_schema(schema_dir, name, content)
    server = ServerProcess(tmp_path / "data", env={"LEITSTAND_SCHEMA_DIR": str(schema_dir)})
    try:
        with pytest.raises(RuntimeError, match="server exited with"):
            server.start(timeout=60)
        log = server.log()
        assert "LEITSTAND_SCHEMA_DIR is invalid" in log and expected in log
    finally:
        server.stop()


def test_missing_schema_dir_refuses_to_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data",
                           env={"LEITSTAND_SCHEMA_DIR": str(tmp_path / "nowhere")})
    try:
        with pytest.raises(RuntimeError, match="server exited with"):
            server.start(timeout=60)
        assert "LEITSTAND_SCHEMA_DIR is invalid" in server.log()
    finally:
        server.stop()


def test_changed_file_takes_effect_under_load_within_5s_without_5xx(
    start: Callable[..., ServerProcess], schema_dir: Path,
) -> None:
    """8 clients keep sending `{"temperature": "warm"}` (a string): 422 under the number schema.
    The file is replaced by the string schema; from then on every answer must be 202 within
    5 s, and no answer at any time is a 5xx or anything but 202/422."""
    server = start(env={"LEITSTAND_SCHEMA_DIR": str(schema_dir)})
    stop = threading.Event()
    answers: list[tuple[float, int]] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def sender() -> None:
        try:
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
                while not stop.is_set():
                    status = client.post("/v1/ingest?domain=aussen",
                                         json={"temperature": "warm"}).status_code
                    with lock:
                        answers.append((time.monotonic(), status))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(answers) < 40 and time.monotonic() < deadline and not failures:
            time.sleep(0.05)
        assert len(answers) >= 40, "the clients got no answers"
        write_schema(schema_dir, "aussen.schema.json", STRING)
        changed = time.monotonic()
        # Wait (bounded) for 202s, then keep the load on for a while longer.
        deadline = changed + 30
        while time.monotonic() < deadline and not failures:
            with lock:
                if any(t > changed and s == 202 for t, s in answers):
                    break
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures
    statuses = Counter(s for _, s in answers)
    assert set(statuses) <= {202, 422}, statuses
    before = [s for t, s in answers if t < changed]
    assert set(before) == {422}
    first_202 = min(t for t, s in answers if s == 202)
    assert first_202 - changed <= 5.0, f"took {first_202 - changed:.1f} s"
    # Once accepted, never rejected again (each client's next request sees the new set).
    settled = first_202 + 0.5
    assert {s for t, s in answers if t > settled} == {202}
    lines = (server.data_dir / "aussen.jsonl").read_bytes().splitlines()
    assert len(lines) == statuses[202]


def test_sighup_reloads_and_a_broken_file_keeps_the_old_schemas(
    start: Callable[..., ServerProcess], schema_dir: Path,
) -> None:
    # A long check interval is not configurable: SIGHUP must act at once, so check right after.
    server = start(env={"LEITSTAND_SCHEMA_DIR": str(schema_dir)})
    assert server.proc is not None
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        def status_of(value: object) -> int:
            return client.post("/v1/ingest?domain=aussen",
                               json={"temperature": value}).status_code

        assert status_of("warm") == 422
        write_schema(schema_dir, "aussen.schema.json", STRING)
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while status_of("warm") != 202:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.05)
        assert server.running()  # SIGHUP did not stop the process

        write_schema(schema_dir, "aussen.schema.json", "{broken")
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "leitstand_schema_reload_failed 1.0" not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the failed reload was not reported"
            time.sleep(0.05)
        assert server.running()
        assert status_of("warm") == 202 and status_of(1) == 422  # the string schema stays
        listing = client.get("/v1/schemas").json()
        assert listing["reload_error"].startswith("aussen.schema.json: invalid JSON")
    assert "reload failed, keeping the previous version" in server.log()
