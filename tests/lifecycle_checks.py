"""Helpers for the data-lifecycle tests: every line of a domain across the active file and its
segments (decompressed), checked strictly; paging a store from the start."""

from __future__ import annotations

import gzip
from pathlib import Path

import zstandard

from leitstand.domains import file_stem
from leitstand.store import Store
from leitstand.store.segments import parse_segment_name


def segment_paths(data: Path, domain: str) -> list[Path]:
    """The domain's segment files in `seq` order (raw and compressed copies both listed)."""
    folder = data / "archive" / file_stem(domain)
    if not folder.is_dir():
        return []
    found = [(parse_segment_name(p.name), p) for p in folder.iterdir()]
    assert all(s is not None for s, _ in found), [p.name for _, p in found]
    return [p for s, p in sorted(found, key=lambda item: item[0].seq)]  # type: ignore[union-attr]


def decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def all_lines(data: Path, domain: str) -> list[bytes]:
    """Every line of the domain, oldest first; fails on a torn line, or a segment that is
    there both raw and compressed."""
    lines: list[bytes] = []
    seqs: list[int] = []
    for path in segment_paths(data, domain):
        segment = parse_segment_name(path.name)
        assert segment is not None
        assert segment.seq not in seqs, f"segment {segment.seq} is there twice: {path.name}"
        seqs.append(segment.seq)
        lines += _whole_lines(path, decompressed(path))
    active = data / (file_stem(domain) + ".jsonl")
    if active.exists():
        lines += _whole_lines(active, active.read_bytes())
    return lines


def _whole_lines(path: Path, data: bytes) -> list[bytes]:
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with a torn line: {data[-80:]!r}"
    return [line + b"\n" for line in data.splitlines()]


async def read_all(store: Store, domain: str, *, cursor: str | None = None,
                   limit: int = 100) -> list[bytes]:
    """Page through the domain from `cursor` (None: the start) until a page comes back empty."""
    lines: list[bytes] = []
    while True:
        page = await store.read(domain, cursor=cursor, limit=limit)
        if not page.lines:
            return lines
        lines += page.lines
        cursor = page.next_cursor
