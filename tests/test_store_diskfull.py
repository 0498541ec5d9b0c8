"""A full disk: 507, the file back at its previous length, and writes work again once space
returns. On a real tiny file system (a 512 KiB tmpfs mounted by the test, as root), and with a
real process whose file size limit (RLIMIT_FSIZE) makes the write fail with EFBIG."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from testing import ROOT, ServerProcess

from .conftest import TOKEN
from .store_checks import metric, stored_events


@contextmanager
def tiny_filesystem(mountpoint: Path, size: str = "512k") -> Iterator[Path]:
    mountpoint.mkdir()
    mounted = _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(mountpoint)])
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}; "
                    "test_file_size_limit_gives_507_and_truncates covers the failing write")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, timeout=30)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a system tool; a missing tool is a failed run (the test then skips, saying why)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]} is not installed "
                                           "(scripts/test-deps.sh installs it)")


def _fill(path: Path) -> None:
    """Write `path` until the file system is full."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        for _ in range(10_000):  # far more than the file system holds
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        else:
            raise AssertionError("the file system never filled up")
    with path.open("ab", buffering=0) as f:  # the last partial page, byte by byte in bulk
        for size in (4096, 512, 64, 8, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError:
                    break


def _ndjson(first: int, count: int, pad: int) -> bytes:
    return b"".join(orjson.dumps({"n": n, "pad": "x" * pad}) + b"\n"
                    for n in range(first, first + count))


def _post(http: httpx.Client, body: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/x-ndjson"}
    if key:
        headers["Idempotency-Key"] = key
    return http.post("/v1/ingest?domain=full", content=body, headers=headers)


@pytest.mark.slow
def test_full_disk_is_507_file_restored_and_writes_resume(tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "disk") as disk:
        data = disk / "data"
        # The free-space guard off: this test is about the write that fails half way.
        server = ServerProcess(data, token=TOKEN, log_path=tmp_path / "server.log",
                               env={"LEITSTAND_MIN_FREE_BYTES": "0"})
        try:
            server.start()
            with httpx.Client(base_url=server.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
                assert _post(http, _ndjson(0, 5, 100), key="first").status_code == 202
                path = data / "full.jsonl"
                before = path.read_bytes()
                filler = disk / "filler"
                _fill(filler)

                batch = _ndjson(5, 40, 1000)  # ~40 KB: much more than any page left free
                for key in (None, "second"):
                    answer = _post(http, batch, key)
                    assert answer.status_code == 507, answer.text
                    assert "disk full" in answer.json()["detail"]
                    assert answer.headers["Retry-After"]
                    assert path.read_bytes() == before  # back at its previous length

                filler.unlink()  # space returns
                answer = _post(http, batch, key="second")
                assert answer.status_code == 202, answer.text
                assert "Idempotent-Replayed" not in answer.headers  # the failed try was void
                assert path.read_bytes() == before + batch.replace(b'"}\n', b'","domain":"full"}\n')
                assert [e["n"] for e in stored_events(path)] == list(range(45))
                text = http.get("/metrics").text
                assert metric(text, 'leitstand_rejections_total{reason="disk_full"}') == 2
        finally:
            server.stop()


_FSIZE_SCRIPT = """
import asyncio, os, resource, sys
from pathlib import Path
from leitstand.errors import DiskFull
from leitstand.metrics import Metrics
from leitstand.store import JsonlStore, StoreOptions

async def main(data):
    store = JsonlStore(data, Metrics(), StoreOptions())
    path = data / "big.jsonl"
    await store.append("big", [b'{"n":0}\\n'])
    size = path.stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4000, resource.RLIM_INFINITY))
    try:
        await store.append("big", [b'{"n":1,"pad":"' + b"x" * 3000 + b'"}\\n'] * 3)
        print("stored?!")
    except DiskFull as exc:
        print(exc.status, exc.detail)
    print("size", path.stat().st_size == size)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    await store.append("big", [b'{"n":2}\\n'])
    print("after", path.read_bytes())
    await store.close()

asyncio.run(main(Path(sys.argv[1])))
"""


def test_file_size_limit_gives_507_and_truncates(tmp_path: Path) -> None:
    """A real process whose writes fail half way (EFBIG from RLIMIT_FSIZE; CPython ignores
    SIGXFSZ): the batch is cut back and answered 507, and the next write lands."""
    done = subprocess.run([sys.executable, "-c", _FSIZE_SCRIPT, str(tmp_path / "data")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "error"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("507 ") and "file size limit" in lines[0], lines
    assert lines[1] == "size True"
    assert lines[2] == "after " + repr(b'{"n":0}\n{"n":2}\n'), lines


@contextmanager
def ext4_on_a_device_that_fails_writeback(where: Path) -> Iterator[tuple[Path, Path]]:
    """An ext4 file system on a loop device whose backing file lives on a 6 MiB tmpfs. Once
    that tmpfs is full, `write()` still succeeds (into the page cache) but writeback, and so
    `fdatasync`, fails; ext4 then aborts its journal. Yields (mount point, backing dir)."""
    backing, mountpoint = where / "backing", where / "ext4"
    mountpoint.mkdir(parents=True)
    with tiny_filesystem(backing, size="6m"):
        image = backing / "disk.img"
        image.touch()
        os.truncate(image, 32 * 1024 * 1024)
        steps = [["mkfs.ext4", "-q", "-F", str(image)],
                 ["losetup", "-f", "--show", str(image)]]
        done = [_run(steps[0])]
        if done[0].returncode == 0:
            done.append(_run(steps[1]))
        if any(d.returncode != 0 for d in done):
            pytest.skip(f"no ext4 on a loop device here: {done[-1].stderr.strip()}")
        device = done[1].stdout.strip()
        try:
            mounted = _run(["mount", device, str(mountpoint)])
            if mounted.returncode != 0:
                pytest.skip(f"cannot mount ext4 from {device}: {mounted.stderr.strip()}")
            try:
                yield mountpoint, backing
            finally:
                subprocess.run(["umount", str(mountpoint)], check=True, timeout=60)
        finally:
            subprocess.run(["losetup", "-d", device], check=True, timeout=30)


@pytest.mark.slow
def test_failed_fdatasync_is_never_acknowledged(tmp_path: Path) -> None:
    with ext4_on_a_device_that_fails_writeback(tmp_path / "dev") as (fs, backing):
        server = ServerProcess(fs / "data", token=TOKEN, log_path=tmp_path / "server.log",
                               env={"LEITSTAND_MIN_FREE_BYTES": "0"})  # a small fs: no guard
        try:
            server.start()
            with httpx.Client(base_url=server.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
                assert _post(http, _ndjson(0, 3, 100)).status_code == 202
                _fill(backing / "filler")  # from now on, writeback to the device fails
                for first in (3, 100):
                    answer = _post(http, _ndjson(first, 50, 2000))  # ~100 KB, page cache only
                    assert answer.status_code in (503, 507), answer.text
            assert "cannot store events in full.jsonl" in server.log()
        finally:
            server.stop()
