"""Rotation in-process: the active file is closed into `archive/<stem>/` by size, every line is
in exactly one file, pages from the start walk every segment and then the active file, a cursor
into the active file stays valid after it became a segment, `tail` spans segments, and
idempotency keys keep answering across rotations and restarts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from leitstand.errors import BadCursor
from leitstand.metrics import Metrics
from leitstand.store import Idempotency, JsonlStore, StoreOptions
from leitstand.store.cursors import decode_cursor, encode_cursor
from leitstand.store.rotation import RotationPolicy
from leitstand.store.segments import parse_segment_name

from .lifecycle_checks import all_lines, read_all

pytestmark = pytest.mark.anyio


def _line(n: int) -> bytes:
    return orjson.dumps({"n": n, "domain": "aussen", "pad": "x" * 40}) + b"\n"


def _store(data: Path, rotate_bytes: int = 1000) -> JsonlStore:
    return JsonlStore(data, Metrics(), StoreOptions(rotation=RotationPolicy(rotate_bytes)))


async def test_rotation_by_size_keeps_every_line_once_in_order(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        for n in range(200):
            await store.append("aussen", [_line(n)])
        lines = await read_all(store, "aussen", limit=7)
        [info] = await store.domains()
    finally:
        await store.close()
    segments = sorted((tmp_path / "archive" / "aussen").iterdir())
    assert len(segments) >= 10
    for path in segments:
        segment = parse_segment_name(path.name)
        assert segment is not None and segment.suffix == ""
        assert 0 < path.stat().st_size < 1000 + len(_line(999))
    assert [orjson.loads(x)["n"] for x in all_lines(tmp_path, "aussen")] == list(range(200))
    assert [orjson.loads(x)["n"] for x in lines] == list(range(200))
    assert info.segments == len(segments)
    active = (tmp_path / "aussen.jsonl").stat().st_size
    assert info.disk_bytes == active + sum(p.stat().st_size for p in segments)
    first = parse_segment_name(segments[0].name)
    assert first is not None and info.oldest_event_at == first.start_time
    assert 0 <= time.time() - info.oldest_event_at < 600


async def test_cursor_into_the_active_file_survives_its_rotation(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        for n in range(5):
            await store.append("aussen", [_line(n)])
        page = await store.read("aussen", limit=3)
        assert [orjson.loads(x)["n"] for x in page.lines] == [0, 1, 2]
        before = decode_cursor(page.next_cursor)
        for n in range(5, 60):  # several rotations
            await store.append("aussen", [_line(n)])
        rest = await read_all(store, "aussen", cursor=page.next_cursor, limit=10)
        assert [orjson.loads(x)["n"] for x in rest] == list(range(3, 60))
        assert decode_cursor((await store.read("aussen", limit=1)).cursors[0]).seq == before.seq
        tail = await store.read("aussen", tail=45)  # spans several segments
        assert [orjson.loads(x)["n"] for x in tail.lines] == list(range(15, 60))
        after = await store.read("aussen", cursor=tail.next_cursor)
        assert after.lines == [] and after.next_cursor == tail.next_cursor
        for forged in (encode_cursor(before.seq, 0, before.offset + 1),  # inside a line
                       encode_cursor(before.seq + 1000, 0, 0)):  # a file that never was
            with pytest.raises(BadCursor):
                await store.read("aussen", cursor=forged)
    finally:
        await store.close()


async def test_idempotency_keys_work_across_rotation_and_restart(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        for n in range(30):
            key = Idempotency.for_lines(f"k{n}", [_line(n)])
            assert not (await store.append("aussen", [_line(n)], key)).replayed
    finally:
        await store.close()
    assert len(list((tmp_path / "archive" / "aussen").iterdir())) >= 1
    store = _store(tmp_path)
    try:
        results = await asyncio.gather(*(
            store.append("aussen", [_line(n)], Idempotency.for_lines(f"k{n}", [_line(n)]))
            for n in range(30)))
        assert all(r.replayed for r in results)
    finally:
        await store.close()
    assert [orjson.loads(x)["n"] for x in all_lines(tmp_path, "aussen")] == list(range(30))


async def test_an_idle_file_is_rotated_by_age_and_compressed(tmp_path: Path) -> None:
    options = StoreOptions(rotation=RotationPolicy(max_age=1.0), compress="gzip",
                           upkeep_interval=0.1)
    store = JsonlStore(tmp_path, Metrics(), options)
    try:
        for n in range(3):
            await store.append("aussen", [_line(n)])
        deadline = time.monotonic() + 30
        while not any(p.name.endswith(".gz") for p in (tmp_path / "archive" / "aussen").glob("*")):
            assert time.monotonic() < deadline, "the idle file was not rotated by age"
            await asyncio.sleep(0.1)
        assert (tmp_path / "aussen.jsonl").stat().st_size == 0
        assert [orjson.loads(x)["n"] for x in await read_all(store, "aussen")] == [0, 1, 2]
        await store.append("aussen", [_line(3)])  # the new file starts its own clock
        assert [orjson.loads(x)["n"] for x in await read_all(store, "aussen")] == [0, 1, 2, 3]
    finally:
        await store.close()


@pytest.mark.parametrize(("name", "value"), [
    ("LEITSTAND_ROTATE_BYTES", "64 parsecs"), ("LEITSTAND_ROTATE_BYTES", "0"),
    ("LEITSTAND_ROTATE_AGE", "1 fortnight"), ("LEITSTAND_COMPRESS", "lz4"),
    ("LEITSTAND_RETAIN_AGE", "-1d"), ("LEITSTAND_RETAIN_BYTES", "lots"),
    ("LEITSTAND_MIN_FREE_BYTES", "1 PiB"), ("LEITSTAND_SINK_METRICS_ADDRESS", "nowhere"),
])
def test_lifecycle_settings_are_checked_at_start_naming_the_variable(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from leitstand.config import load_settings

    monkeypatch.setenv("LEITSTAND_TOKEN", "t")
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        load_settings(_env_file=None)
    assert f"{name} is invalid" in capsys.readouterr().err


def test_lifecycle_sizes_and_ages_take_units() -> None:
    from leitstand.config import Settings

    settings = Settings(_env_file=None, token="t", rotate_bytes="64KiB", rotate_age="1d",  # type: ignore[call-arg]
                        retain_age="90m", retain_bytes="1GiB", min_free_bytes="512MiB")
    assert (settings.rotate_bytes, settings.rotate_age) == (65536, 86400.0)
    assert (settings.retain_age, settings.retain_bytes) == (5400.0, 1024**3)
    assert settings.min_free_bytes == 512 * 1024**2
    assert settings.compress_method() == "zstd"  # the default once rotation is on
    assert Settings(_env_file=None, token="t").compress_method() == "none"  # type: ignore[call-arg]


@pytest.mark.parametrize("method", ["zstd", "gzip"])
async def test_paging_through_large_compressed_segments(tmp_path: Path, method: str) -> None:
    """Small pages through segments of ~200 KiB each: the same lines as written, and the pages
    after the first continue the kept decompressor instead of starting from the beginning."""
    options = StoreOptions(rotation=RotationPolicy(200_000), compress=method,
                           upkeep_interval=0.1)
    store = JsonlStore(tmp_path, Metrics(), options)
    try:
        for first in range(0, 9000, 100):
            await store.append("aussen", [_line(n) for n in range(first, first + 100)])
        suffix = ".zst" if method == "zstd" else ".gz"
        deadline = time.monotonic() + 60
        while not all(p.name.endswith(suffix)
                      for p in (tmp_path / "archive" / "aussen").iterdir()):
            assert time.monotonic() < deadline, "not compressed in time"
            await asyncio.sleep(0.1)
        lines = await read_all(store, "aussen", limit=50)
        assert [orjson.loads(x)["n"] for x in lines] == list(range(9000))
        assert store._reader.streams.hits > 100  # the kept decompressors were used
    finally:
        await store.close()
