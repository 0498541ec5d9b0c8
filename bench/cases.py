"""The benchmark cases: what is sent, and how the stored file is checked afterwards."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zstandard

DOMAIN = "bench"


def event(seq: int) -> dict[str, Any]:
    """A small, typical event (about 90 bytes as a stored line)."""
    return {"event": "sensor.reading", "seq": seq, "host": "bench-01", "status": "ok",
            "value": 21.5}


# The `*-schema` cases run with LEITSTAND_SCHEMA_DIR holding this schema for every domain: ten
# properties (the bench event's six, `domain` included, and four optional ones), typed and
# constrained, no others allowed. Issue 14's target: ndjson100 keeps >= 75% of its events/s.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "event": {"type": "string", "maxLength": 64},
        "seq": {"type": "integer", "minimum": 0},
        "host": {"type": "string", "pattern": "^[a-z0-9-]+$"},
        "status": {"enum": ["ok", "warn", "error"]},
        "value": {"type": "number"},
        "domain": {"type": "string"},
        "unit": {"type": "string"},
        "room": {"type": "string"},
        "battery": {"type": "number", "minimum": 0, "maximum": 100},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["event", "seq", "host", "status", "value", "domain"],
    "additionalProperties": False,
}
SCHEMA_FILE = "*.schema.json"  # a pattern: the warm-up domain is checked too


# A rotation about every second at ndjson100's rate; closed segments compressed with zstd.
ROTATE_ENV = {"LEITSTAND_ROTATE_BYTES": "4MiB", "LEITSTAND_COMPRESS": "zstd"}


@dataclass(frozen=True)
class Kind:
    name: str
    route: str  # URL path and query, with {domain}
    content_type: str
    events: list[dict[str, Any]]
    schema: dict[str, Any] | None = None  # run with this schema in LEITSTAND_SCHEMA_DIR
    env: dict[str, str] | None = None  # more LEITSTAND_* settings for the server

    def path(self, domain: str = DOMAIN) -> str:
        return self.route.format(domain=domain)

    @property
    def per_request(self) -> int:
        return len(self.events)

    def body(self) -> bytes:
        if self.content_type == "application/x-ndjson":
            return b"".join(orjson.dumps(e) + b"\n" for e in self.events)
        return orjson.dumps(self.events[0])

    def stored(self) -> list[dict[str, Any]]:
        """The events as they must appear in the file: each with the normalised domain."""
        return [{**e, "domain": DOMAIN} for e in self.events]


KINDS = {
    "single": Kind("single", "/v1/ingest?domain={domain}", "application/json", [event(0)]),
    "ndjson100": Kind("ndjson100", "/v1/ingest?domain={domain}", "application/x-ndjson",
                      [event(i) for i in range(100)]),
    "ndjson1000": Kind("ndjson1000", "/v1/ingest?domain={domain}", "application/x-ndjson",
                       [event(i) for i in range(1000)]),
    "legacy": Kind("legacy", "/ingest/{domain}", "application/json", [event(0)]),
    "single-schema": Kind("single-schema", "/v1/ingest?domain={domain}", "application/json",
                          [event(0)], SCHEMA),
    "ndjson100-schema": Kind("ndjson100-schema", "/v1/ingest?domain={domain}",
                             "application/x-ndjson", [event(i) for i in range(100)], SCHEMA),
    # Rotation with zstd on (issue 12's target: at most 10% fewer events/s than ndjson100).
    "ndjson100-rotate": Kind("ndjson100-rotate", "/v1/ingest?domain={domain}",
                             "application/x-ndjson", [event(i) for i in range(100)],
                             env=ROTATE_ENV),
}


@dataclass(frozen=True)
class Stored:
    requests: int  # whole batches found in the file
    lines: int


class VerifyError(AssertionError):
    pass


def verify_file(path: Path, kind: Kind) -> Stored:
    """The file must be whole batches of exactly this kind's events, in order, nothing else:
    no torn or interleaved line, no foreign line. Returns how many batches it holds."""
    data = domain_bytes(path)
    if data and not data.endswith(b"\n"):
        raise VerifyError(f"{path.name} ends with a partial line")
    lines = data.split(b"\n")[:-1] if data else []
    size = kind.per_request
    if len(lines) % size:
        raise VerifyError(f"{len(lines)} lines is not a whole number of {size}-event batches")
    if not lines:
        return Stored(0, 0)
    template = lines[:size]
    expected = kind.stored()
    for n, (raw, want) in enumerate(zip(template, expected, strict=True)):
        if orjson.loads(raw) != want:
            raise VerifyError(f"line {n + 1} is {raw[:200]!r}, expected {want!r}")
    for start in range(size, len(lines), size):
        if lines[start:start + size] != template:
            raise VerifyError(f"batch at line {start + 1} differs from the first batch")
    return Stored(len(lines) // size, len(lines))


def check_acknowledged(stored: int, ok: int, non_ok: int, connections: int,
                       socket_errors: int) -> str | None:
    """None if the file holds exactly the acknowledged requests, up to the ones in flight when
    the load stopped (wrk sends one request at a time per connection, so at most one per
    connection — plus one per connection wrk dropped with an error); else why not."""
    if non_ok:
        return f"{non_ok} answers were not 2xx"
    if stored < ok:
        return f"LOST: {ok} requests acknowledged, only {stored} stored"
    extra = stored - ok
    if extra > connections + socket_errors:
        return f"{extra} more stored than acknowledged (tolerance {connections + socket_errors})"
    return None


def domain_bytes(path: Path) -> bytes:
    """Everything of the domain whose active file is `path`: its closed segments (archive/,
    decompressed, in `seq` order; of a raw and a compressed copy the raw one), then the file."""
    segments: dict[int, Path] = {}
    folder = path.parent / "archive" / path.name.removesuffix(".jsonl")
    for segment in sorted(folder.iterdir()) if folder.is_dir() else []:
        if ".jsonl" not in segment.name or segment.name.endswith(".tmp"):
            continue
        seq = int(segment.name.split("-")[1].split(".")[0])
        if seq not in segments or segment.name.endswith(".jsonl"):
            segments[seq] = segment
    parts = []
    for seq in sorted(segments):
        raw = segments[seq].read_bytes()
        if segments[seq].name.endswith(".zst"):
            raw = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
        elif segments[seq].name.endswith(".gz"):
            raw = gzip.decompress(raw)
        parts.append(raw)
    parts.append(path.read_bytes() if path.exists() else b"")
    return b"".join(parts)
