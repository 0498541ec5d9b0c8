"""The free-space guard (`LEITSTAND_MIN_FREE_BYTES`) on a real small file system: a write that
would leave less than the minimum free gets 507 before anything is written (the data file and
the intent log stay byte for byte as they were), the disk never fills, smaller writes that fit
go on, and the refused batch lands once space is freed."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from testing import ServerProcess

from .conftest import TOKEN
from .store_checks import metric, stored_events
from .test_store_diskfull import _ndjson, _post, tiny_filesystem

MIN_FREE = 1024 * 1024


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _leave_free(filler: Path, disk: Path, wanted: int) -> None:
    """Grow `filler` until about `wanted` bytes are free on `disk`."""
    with filler.open("ab", buffering=0) as f:
        f.write(b"\0" * (_free(disk) - wanted))
        os.fsync(f.fileno())


@pytest.mark.slow
def test_guard_refuses_before_writing_and_writes_resume(tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "disk", size="4m") as disk:
        data = disk / "data"
        server = ServerProcess(data, token=TOKEN, log_path=tmp_path / "server.log",
                               env={"LEITSTAND_MIN_FREE_BYTES": "1MiB"})
        try:
            server.start()
            with httpx.Client(base_url=server.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
                assert _post(http, _ndjson(0, 5, 100), key="first").status_code == 202
                path = data / "full.jsonl"
                idem = data / ".leitstand" / "full.idem"
                before, idem_before = path.read_bytes(), idem.read_bytes()

                filler = disk / "filler"
                _leave_free(filler, disk, MIN_FREE + 16 * 1024)
                batch = _ndjson(5, 40, 1000)  # ~40 KB: would leave less than 1 MiB free
                for key in (None, "second"):
                    answer = _post(http, batch, key)
                    assert answer.status_code == 507, answer.text
                    assert "LEITSTAND_MIN_FREE_BYTES" in answer.json()["detail"]
                    assert answer.headers["Retry-After"]
                    assert path.read_bytes() == before  # nothing of it was written
                    assert idem.read_bytes() == idem_before  # not even its intent
                assert _free(disk) > MIN_FREE  # the disk itself never filled up

                small = _ndjson(100, 2, 100)  # ~250 bytes still fit above the minimum
                assert _post(http, small, key="small").status_code == 202

                text = http.get("/metrics").text
                assert metric(text, "leitstand_free_space_refusals_total") == 2
                assert metric(text, 'leitstand_rejections_total{reason="low_disk_space"}') == 2
                assert 0 < metric(text, "leitstand_data_dir_free_bytes") <= MIN_FREE + 16 * 1024

                filler.unlink()  # space returns
                answer = _post(http, batch, key="second")
                assert answer.status_code == 202, answer.text
                assert "Idempotent-Replayed" not in answer.headers  # the refused try was void
                numbers = [e["n"] for e in stored_events(path)]
                assert numbers == [*range(5), 100, 101, *range(5, 45)]
        finally:
            server.stop()


def test_bad_min_free_bytes_is_refused_at_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", token=TOKEN, log_path=tmp_path / "server.log",
                           env={"LEITSTAND_MIN_FREE_BYTES": "64 parsecs"})
    with pytest.raises(RuntimeError, match="exited"):
        server.start(timeout=20)
    server.stop()
    assert "LEITSTAND_MIN_FREE_BYTES is invalid" in server.log()
