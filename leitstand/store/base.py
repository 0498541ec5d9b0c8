"""The storage interface the API layer talks to. Backends: `jsonl` (embedded default) and
`nats` (`leitstand/nats/`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A request's `Idempotency-Key` with a fingerprint of what it asks to store."""

    key: str
    fingerprint: str

    @classmethod
    def for_lines(cls, key: str, lines: list[bytes]) -> Idempotency:
        digest = hashlib.sha256()
        for line in lines:
            digest.update(line)
        return cls(key, digest.hexdigest())


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What a successful append did. `replayed`: an earlier request with the same key stored it."""

    accepted: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """One domain as the read side sees it. `events`, `bytes`: whole lines of the active file;
    `last_event_at`: Unix time of the last append. `disk_bytes`: the active file and every
    retained segment as stored (compressed); `oldest_event_at`: when the oldest retained line was
    written (the first segment's start, or the active file's first line: as its record notes it,
    else the file's creation time; see `segments.archive_summary`), None for an empty domain."""

    domain: str
    file: str
    events: int
    bytes: int
    last_event_at: float | None
    disk_bytes: int = 0
    segments: int = 0
    oldest_event_at: float | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """Whole stored lines read from a domain. `cursors[i]` is the position just after
    `lines[i]`; `next_cursor` the position after the last line (the start when empty)."""

    lines: list[bytes]
    cursors: list[str]
    next_cursor: str


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the backend can store now. `backend`: the parts it reports for `/health` (None:
    a backend with nothing to report, such as the embedded store)."""

    ok: bool
    backend: dict[str, Any] | None = None


class Store(Protocol):
    """Append-only event storage, one ordered log of JSON lines per domain.

    `append` returns only once the lines are durable (as configured) and raises a
    `LeitstandError` (lock timeout, disk full, storage failure, idempotency conflict) otherwise;
    a batch is stored whole or not at all.
    """

    async def append(
        self, domain: str, lines: list[bytes], idempotency: Idempotency | None = None
    ) -> AppendResult: ...

    async def domains(self) -> list[DomainInfo]:
        """Every domain that has a data file, sorted by name. Cheap: no full re-read per call."""
        ...

    async def read(
        self, domain: str, *, cursor: str | None = None, limit: int = 100, tail: int | None = None
    ) -> Batch:
        """Up to `limit` whole lines after the opaque `cursor` (None: from the start), or the
        last `tail` lines. Raises `NotFound` for an unknown domain, `BadCursor` for a cursor this
        store did not hand out."""
        ...

    async def health(self) -> Health:
        """Whether the backend can store now (nats: connected, and the stream answers)."""
        ...

    async def close(self) -> None: ...
