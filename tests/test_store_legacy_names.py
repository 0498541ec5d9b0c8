"""Data files with the earlier long-domain names (`<211 characters>-<32 hex>.jsonl`) are renamed
to today's names when the store (or the sink) starts, with their helper files, crash-safe and
exactly once when two workers start at once; a taken new name keeps both files with a warning."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.domains import data_file_name, file_stem
from leitstand.metrics import Metrics
from leitstand.nats.domainsink import DataDir
from leitstand.store import Idempotency, JsonlStore, StoreOptions
from leitstand.store.legacy import legacy_stem
from testing import ROOT, ServerProcess
from testing.processes import clean_env

from .conftest import TOKEN
from .lifecycle_checks import read_all
from .store_checks import stored_events

pytestmark = pytest.mark.anyio

LONG = ".".join(["x" * 63, "y" * 63, "z" * 63]) + "." + "w" * 50  # 240: a new shortened name
MIDDLE = ".".join(["x" * 63, "y" * 63, "z" * 63]) + "." + "w" * 30  # 220: a new plain name
DOMAINS = {"240 characters": LONG, "220 characters": MIDDLE}
HELPERS = (".idem", ".quarantine", ".seq", ".seg")


def _line(domain: str, n: int) -> bytes:
    return orjson.dumps({"n": n, "domain": domain}) + b"\n"


def _key(domain: str, n: int) -> Idempotency:
    return Idempotency.for_lines(f"k{n}", [_line(domain, n)])


def old_path(data: Path, domain: str) -> Path:
    stem = legacy_stem(domain)
    assert stem is not None and len(stem) == 244
    return data / (stem + ".jsonl")


def new_path(data: Path, domain: str) -> Path:
    return data / data_file_name(domain)


async def write_old_layout(data: Path, domain: str, count: int = 3) -> int:
    """What an earlier version left: the data file and its helper files under the old stem
    (written by today's store, then renamed; the earlier version kept no owner record)."""
    store = JsonlStore(data, Metrics(), StoreOptions())
    try:
        for n in range(count):
            await store.append(domain, [_line(domain, n)], _key(domain, n))
    finally:
        await store.close()
    old, new = legacy_stem(domain), file_stem(domain)
    assert old is not None
    (data / ".leitstand" / f"{new}.quarantine").write_bytes(b'{"torn\n')
    helper = data / ".leitstand"
    for suffix in HELPERS:
        if (helper / f"{new}{suffix}").exists():
            os.rename(helper / f"{new}{suffix}", helper / f"{old}{suffix}")
    (helper / f"{new}.dom").unlink(missing_ok=True)
    os.rename(new_path(data, domain), old_path(data, domain))
    return old_path(data, domain).stat().st_ino


def assert_migrated(data: Path, domain: str, inode: int) -> None:
    old, new = legacy_stem(domain), file_stem(domain)
    assert not old_path(data, domain).exists()
    assert new_path(data, domain).stat().st_ino == inode
    helper = data / ".leitstand"
    assert not list(helper.glob(f"{old}.*")), list(helper.iterdir())
    assert (helper / f"{new}.idem").exists() and (helper / f"{new}.quarantine").exists()
    if len(domain) > 235:
        assert (helper / f"{new}.dom").read_text() == domain + "\n"


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
async def test_an_old_long_domain_file_is_renamed_with_its_helper_files(
    tmp_path: Path, domain: str
) -> None:
    inode = await write_old_layout(tmp_path, domain)
    store = JsonlStore(tmp_path, Metrics(), StoreOptions())
    try:
        assert_migrated(tmp_path, domain, inode)
        assert await read_all(store, domain) == [_line(domain, n) for n in range(3)]
        replay = await store.append(domain, [_line(domain, 1)], _key(domain, 1))
        assert replay.replayed  # the intent log came along: its keys still answer
        await store.append(domain, [_line(domain, 3)], _key(domain, 3))
        assert await read_all(store, domain) == [_line(domain, n) for n in range(4)]
    finally:
        await store.close()
    assert new_path(tmp_path, domain).stat().st_ino == inode  # appended to the same file


async def test_a_file_whose_lines_do_not_prove_the_old_name_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The name must be exactly the old name of the domain its lines name."""
    impostor = old_path(tmp_path, LONG)
    tmp_path.mkdir(exist_ok=True)
    impostor.write_bytes(b"not json\n" + _line(MIDDLE, 0))  # the lines name another domain
    silent = old_path(tmp_path, MIDDLE)
    silent.write_bytes(b'{"no": "domain"}\n')
    with caplog.at_level(logging.WARNING, logger="leitstand.store"):
        store = JsonlStore(tmp_path, Metrics(), StoreOptions())
        await store.close()
    assert impostor.exists() and silent.exists()
    assert not new_path(tmp_path, LONG).exists() and not new_path(tmp_path, MIDDLE).exists()
    assert sum("none of its first lines names" in r.getMessage() for r in caplog.records) == 2


async def test_a_taken_new_name_keeps_both_files_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await write_old_layout(tmp_path, LONG)
    old_bytes = old_path(tmp_path, LONG).read_bytes()
    new_path(tmp_path, LONG).write_bytes(_line(LONG, 100))  # written under the new name since
    with caplog.at_level(logging.WARNING, logger="leitstand.store"):
        store = JsonlStore(tmp_path, Metrics(), StoreOptions())
    try:
        [warning] = [r.getMessage() for r in caplog.records if "is not renamed" in r.getMessage()]
        assert old_path(tmp_path, LONG).name in warning and data_file_name(LONG) in warning
        assert old_path(tmp_path, LONG).read_bytes() == old_bytes
        await store.append(LONG, [_line(LONG, 101)])  # it keeps serving the new name
        assert await read_all(store, LONG) == [_line(LONG, 100), _line(LONG, 101)]
    finally:
        await store.close()
    assert (tmp_path / ".leitstand" / f"{legacy_stem(LONG)}.idem").exists()  # left as it was


@pytest.mark.parametrize("stage", ["helpers renamed", "data file linked"])
async def test_a_migration_cut_short_by_a_crash_is_finished_at_the_next_start(
    tmp_path: Path, stage: str
) -> None:
    """The states a kill can leave (the steps run in this order), finished by the next start."""
    inode = await write_old_layout(tmp_path, LONG)
    old, new = legacy_stem(LONG), file_stem(LONG)
    helper = tmp_path / ".leitstand"
    (helper / f"{new}.dom").write_text(LONG + "\n")
    os.rename(helper / f"{old}.idem", helper / f"{new}.idem")  # one helper renamed, one not
    if stage == "data file linked":
        os.rename(helper / f"{old}.quarantine", helper / f"{new}.quarantine")
        os.link(old_path(tmp_path, LONG), new_path(tmp_path, LONG))
    store = JsonlStore(tmp_path, Metrics(), StoreOptions())
    try:
        assert_migrated(tmp_path, LONG, inode)
        assert (await store.append(LONG, [_line(LONG, 0)], _key(LONG, 0))).replayed
        assert await read_all(store, LONG) == [_line(LONG, n) for n in range(3)]
    finally:
        await store.close()


_START = """
import asyncio, logging, sys
from pathlib import Path
from leitstand.metrics import Metrics
from leitstand.store import JsonlStore, StoreOptions
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
print("ready", flush=True)
sys.stdin.readline()
store = JsonlStore(Path(sys.argv[1]), Metrics(), StoreOptions(lock_timeout=60.0))
asyncio.run(store.close())
"""


async def test_two_processes_starting_at_once_rename_once(tmp_path: Path) -> None:
    """As two workers do: both find the old file; one renames it under its flock, the other
    waits for the lock and then finds the name gone."""
    inode = await write_old_layout(tmp_path, LONG)
    procs = [subprocess.Popen([sys.executable, "-c", _START, str(tmp_path)], cwd=ROOT,
                              env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        for proc in procs:  # go, both at once
            assert proc.stdin is not None
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        logs = [proc.communicate(timeout=120)[1].decode() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert [proc.returncode for proc in procs] == [0, 0], logs
    assert sum(log.count("renamed ") for log in logs) == 1, logs
    assert not any("cannot rename" in log for log in logs), logs
    assert_migrated(tmp_path, LONG, inode)


def test_the_nats_sink_renames_old_files_too(tmp_path: Path) -> None:
    """The sink's start path: the file and its sequence log move, so messages it wrote before
    are not written again when JetStream redelivers them."""
    first = DataDir(tmp_path, fsync=True, lock_timeout=2.0)
    try:
        assert first.apply([(n + 1, LONG, _line(LONG, n)) for n in range(3)]) == 3
    finally:
        first.close()
    old, new = legacy_stem(LONG), file_stem(LONG)
    os.rename(tmp_path / ".leitstand" / f"{new}.seq", tmp_path / ".leitstand" / f"{old}.seq")
    os.rename(new_path(tmp_path, LONG), old_path(tmp_path, LONG))
    again = DataDir(tmp_path, fsync=True, lock_timeout=2.0)
    try:
        assert not old_path(tmp_path, LONG).exists()
        assert again.apply([(n + 1, LONG, _line(LONG, n)) for n in range(1, 5)]) == 2
    finally:
        again.close()
    assert new_path(tmp_path, LONG).read_bytes() == b"".join(_line(LONG, n) for n in range(5))


@pytest.mark.slow
async def test_server_with_two_workers_serves_an_old_named_file(tmp_path: Path) -> None:
    """End to end: an old-named file present at start; the real server (2 workers) serves its
    events from /v1/events and appends new ingests to the same file under its new name."""
    data = tmp_path / "data"
    data.mkdir()
    inode = await write_old_layout(data, LONG)
    with ServerProcess(data, token=TOKEN, workers=2) as server:
        headers = {"X-Auth": TOKEN}
        page = httpx.get(f"{server.url}/v1/events", params={"domain": LONG}, headers=headers,
                         timeout=30)
        assert page.status_code == 200, page.text
        assert [orjson.loads(x)["n"] for x in page.text.splitlines()] == [0, 1, 2]
        for n in range(3, 13):  # new connections: both workers take a share
            answer = httpx.post(f"{server.url}/v1/ingest", params={"domain": LONG},
                                json={"n": n}, headers={**headers, "Connection": "close"},
                                timeout=30)
            assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 30
        while True:
            page = httpx.get(f"{server.url}/v1/events", params={"domain": LONG},
                             headers=headers, timeout=30)
            if len(page.text.splitlines()) >= 13:
                break
            assert time.monotonic() < deadline, page.text
            time.sleep(0.1)
        log = server.log_path.read_text()
    assert [orjson.loads(x)["n"] for x in page.text.splitlines()] == list(range(13))
    assert log.count("renamed ") == 1, log
    assert_migrated(data, LONG, inode)
    assert [e["n"] for e in stored_events(new_path(data, LONG))] == list(range(13))


async def test_the_segments_of_an_old_name_move_with_it(tmp_path: Path) -> None:
    """A rotated file under the old name: `archive/<old stem>/` becomes `archive/<new stem>/`,
    so paging from the start walks the segment, then the active file."""
    inode = await write_old_layout(tmp_path, LONG, count=2)
    old, new = legacy_stem(LONG), file_stem(LONG)
    segments = tmp_path / "archive" / str(old)
    segments.mkdir(parents=True)
    (segments / "20260101T000000Z-00000001.jsonl").write_bytes(_line(LONG, -1))
    store = JsonlStore(tmp_path, Metrics(), StoreOptions())
    try:
        assert_migrated(tmp_path, LONG, inode)
        assert not segments.exists()
        assert (tmp_path / "archive" / new / "20260101T000000Z-00000001.jsonl").exists()
        assert await read_all(store, LONG) == [_line(LONG, n) for n in (-1, 0, 1)]
    finally:
        await store.close()
