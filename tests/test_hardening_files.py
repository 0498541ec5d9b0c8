"""Files in the data dir: created with mode 0600 whatever the umask, and a symlink (or another
non-regular file) planted where the service would write is refused; its target stays untouched."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from leitstand.domains import data_file_name, file_stem

pytestmark = pytest.mark.anyio

HELPER = ".leitstand"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0, so that only the service's own mode argument decides."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_every_file_is_created_0600_even_with_umask_0(
    make_client, data_dir, open_umask
) -> None:
    client = make_client()
    response = await client.post("/v1/ingest?domain=aussen", json={"n": 1},
                                 headers={"Idempotency-Key": "k1"})
    assert response.status_code == 202
    data_file = data_dir / "aussen.jsonl"
    with data_file.open("ab") as f:  # a torn tail: the next append writes the quarantine file
        f.write(b'{"torn":')
    response = await client.post("/v1/ingest?domain=aussen", json={"n": 2},
                                  headers={"Idempotency-Key": "k2"})
    assert response.status_code == 202
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert data_file in files
    assert any(p.name.endswith(".quarantine") for p in files), files
    assert len(files) >= 3, files  # data, idempotency log, quarantine
    for path in files:
        assert mode(path) == 0o600, (path, oct(mode(path)))
    for path in [data_dir / HELPER, *[p for p in (data_dir / HELPER).rglob("*") if p.is_dir()]]:
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


def plant(link: Path, target: Path) -> None:
    """Put a symlink where the service writes (replacing a file it created earlier)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def assert_refused(response, target: Path, before: bytes | None) -> None:
    assert response.status_code >= 500, response.text  # a server-side fault, not the client's
    assert set(response.json()) == {"detail"}
    if before is None:
        assert not target.exists(), "the symlink's target was created"
    else:
        assert target.read_bytes() == before


@pytest.mark.parametrize("dangling", [False, True], ids=["existing-target", "dangling"])
@pytest.mark.parametrize("route", ["/v1/ingest?domain=aussen", "/ingest/aussen"])
async def test_symlinked_data_file_is_refused_target_untouched(
    make_client, data_dir, tmp_path, dangling, route
) -> None:
    target = tmp_path / "outside" / "target"
    target.parent.mkdir()
    before = None if dangling else b"precious\n"
    if before is not None:
        target.write_bytes(before)
    data_dir.mkdir(parents=True, exist_ok=True)
    plant(data_dir / data_file_name("aussen"), target)
    client = make_client()
    response = await client.post(route, json={"evil": True})
    assert_refused(response, target, before)
    # the refusal is stable: a second request neither follows the link nor replaces it
    response = await client.post(route, json={"evil": True})
    assert_refused(response, target, before)
    assert (data_dir / data_file_name("aussen")).is_symlink()
    # other domains are unaffected
    response = await client.post("/v1/ingest?domain=innen", json={"ok": True})
    assert response.status_code == 202


@pytest.mark.parametrize("suffix", [".idem", ".quarantine", ".idem.tmp"])
async def test_symlinked_helper_file_is_refused_target_untouched(
    make_client, data_dir, tmp_path, suffix
) -> None:
    target = tmp_path / "outside-target"
    before = b"precious\n"
    target.write_bytes(before)
    client = make_client(idempotency_max_keys=1, fsync="off")
    # create the data file and the helper dir first, then plant the link
    response = await client.post("/v1/ingest?domain=aussen", json={"n": 0})
    assert response.status_code == 202
    plant(data_dir / HELPER / (file_stem("aussen") + suffix), target)
    data_file = data_dir / "aussen.jsonl"
    with data_file.open("ab") as f:
        f.write(b'{"torn":')  # so that the quarantine file is written on the next append
    codes = []
    for n in range(1, 1500):  # enough keyed requests to make the idempotency log compact
        response = await client.post("/v1/ingest?domain=aussen", json={"n": n},
                                     headers={"Idempotency-Key": f"key-{n}"})
        codes.append(response.status_code)
        if response.status_code >= 500 or suffix != ".idem.tmp":
            break
    assert target.read_bytes() == before
    assert (data_dir / HELPER / (file_stem("aussen") + suffix)).is_symlink()
    if suffix != ".idem.tmp":
        assert codes[-1] >= 500, codes  # refused: the helper file is needed for this request
    else:
        # compaction (which writes .idem.tmp) was due, failed on the link and was skipped:
        # the requests themselves were stored
        assert set(codes) == {202}, codes
        assert len(codes) == 1499
        idem = (data_dir / HELPER / (file_stem("aussen") + ".idem")).read_bytes()
        assert idem.count(b"\n") > 1030


async def test_symlinked_helper_dir_is_refused(make_client, data_dir, tmp_path) -> None:
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    data_dir.mkdir(parents=True)
    plant(data_dir / HELPER, outside)
    try:
        client = make_client()
    except Exception as exc:  # refusing to start is a fine answer too
        assert "symlink" in str(exc) or HELPER in str(exc)
    else:
        response = await client.post("/v1/ingest?domain=aussen", json={"n": 1},
                                     headers={"Idempotency-Key": "k"})
        assert response.status_code >= 500
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "directory"])
async def test_non_regular_data_file_is_refused(make_client, data_dir, kind) -> None:
    data_dir.mkdir(parents=True)
    path = data_dir / data_file_name("aussen")
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    client = make_client()
    response = await client.post("/v1/ingest?domain=aussen", json={"n": 1})
    assert response.status_code >= 500
    assert set(response.json()) == {"detail"}
    assert stat.S_ISFIFO(path.lstat().st_mode) if kind == "fifo" else path.is_dir()


async def test_compaction_runs_without_a_planted_link(make_client, data_dir) -> None:
    """The control for the `.idem.tmp` case above: the same requests do compact the log."""
    client = make_client(idempotency_max_keys=1, fsync="off")
    for n in range(1, 1500):
        response = await client.post("/v1/ingest?domain=aussen", json={"n": n},
                                     headers={"Idempotency-Key": f"key-{n}"})
        assert response.status_code == 202
    idem = (data_dir / HELPER / (file_stem("aussen") + ".idem")).read_bytes()
    assert idem.count(b"\n") < 1030
