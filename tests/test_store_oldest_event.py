"""`oldest_event_at` of `/v1/domains` before any segment exists: the time the active file's first
line was written. With rotation on the writer notes it in the file's record (the embedded store
and the NATS sink alike); otherwise (and for a file no rotating writer has written to yet) it is
the file's creation time (`store/birth.py`: a domain's file is created for its first line), which
a rotating writer then notes, so that rotation by age closes such a file too."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from leitstand.metrics import Metrics
from leitstand.nats.domainsink import DataDir
from leitstand.store import JsonlStore, StoreOptions
from leitstand.store.birth import birth_time
from leitstand.store.reader import DomainStats
from leitstand.store.rotation import RotationPolicy

from .lifecycle_checks import all_lines, segment_paths

pytestmark = pytest.mark.anyio

POLICIES = {"rotation off": RotationPolicy(), "by size": RotationPolicy(max_bytes=1 << 20)}
LONG_AGO = 1_767_323_045.0  # 2026-01-02T03:04:05Z


def _line(n: int) -> bytes:
    return orjson.dumps({"n": n, "domain": "aussen"}) + b"\n"


def oldest(data: Path) -> float | None:
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        [info] = DomainStats(fd).snapshot()
    finally:
        os.close(fd)
    return info.oldest_event_at


def needs_birth_time(data: Path) -> None:
    """Without a birth time (old kernel or libc, some file systems) the fallback is the last
    change, which these checks rule out on purpose."""
    probe = data / "probe"
    probe.write_bytes(b"")
    fd = os.open(probe, os.O_RDONLY)
    try:
        if birth_time(fd) is None:
            pytest.skip("the file system reports no birth time here")
    finally:
        os.close(fd)
        probe.unlink()


def later_than(moment: float) -> None:
    """Wait until the clock has moved past `moment`, so the next write is a later one."""
    while time.time() <= moment:
        time.sleep(0.001)


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
async def test_the_first_line_of_the_active_file_is_the_oldest_event(
    tmp_path: Path, policy: RotationPolicy
) -> None:
    if not policy.enabled:
        needs_birth_time(tmp_path)
    store = JsonlStore(tmp_path, Metrics(), StoreOptions(rotation=policy))
    try:
        before = time.time()
        await store.append("aussen", [_line(0)])
        after = time.time()
        [info] = await store.domains()
        assert info.segments == 0
        assert info.oldest_event_at is not None and before - 0.05 <= info.oldest_event_at <= after
        later_than(after)
        await store.append("aussen", [_line(1)])
        assert (await store.domains())[0].oldest_event_at == info.oldest_event_at
    finally:
        await store.close()
    again = JsonlStore(tmp_path, Metrics(), StoreOptions(rotation=policy))
    try:
        await again.append("aussen", [_line(2)])
        assert (await again.domains())[0].oldest_event_at == info.oldest_event_at
    finally:
        await again.close()


async def test_a_file_from_before_rotation_counts_from_its_creation(tmp_path: Path) -> None:
    """A file no rotating writer has written to (from before an upgrade, or by hand): its
    creation time, not its last change, is its oldest event; a rotating writer notes that time
    and closes the file by age at its next write."""
    needs_birth_time(tmp_path)
    before = time.time()
    (tmp_path / "aussen.jsonl").write_bytes(_line(0))
    after = time.time()
    os.utime(tmp_path / "aussen.jsonl", (LONG_AGO, LONG_AGO))  # not what counts
    created = oldest(tmp_path)
    assert created is not None and before - 0.05 <= created <= after
    later_than(created + 1.0)
    store = JsonlStore(tmp_path, Metrics(), StoreOptions(
        rotation=RotationPolicy(max_age=1.0), compress="none", upkeep_interval=3600.0))
    try:
        await store.append("aussen", [_line(1)])  # its first line is older than a second
        [info] = await store.domains()
    finally:
        await store.close()
    [segment] = segment_paths(tmp_path, "aussen")
    assert segment.name.startswith(time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime(created)))
    assert info.segments == 1 and info.oldest_event_at == int(created)
    assert all_lines(tmp_path, "aussen") == [_line(0), _line(1)]


def test_an_empty_domain_has_no_oldest_event(tmp_path: Path) -> None:
    (tmp_path / "aussen.jsonl").write_bytes(b"")
    assert oldest(tmp_path) is None


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_the_nats_sink_files_tell_their_first_line_too(
    tmp_path: Path, policy: RotationPolicy
) -> None:
    if not policy.enabled:
        needs_birth_time(tmp_path)
    data = DataDir(tmp_path, fsync=True, lock_timeout=2.0,
                   lifecycle=StoreOptions(rotation=policy, compress="none"))
    try:
        before = time.time()
        assert data.apply([(1, "aussen", _line(0))]) == 1
        after = time.time()
        first = oldest(tmp_path)
        assert first is not None and before - 0.05 <= first <= after
        later_than(after)
        assert data.apply([(2, "aussen", _line(1))]) == 1
        assert oldest(tmp_path) == first
    finally:
        data.close()
