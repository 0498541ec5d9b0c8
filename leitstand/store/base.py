"""The storage interface the API layer talks to. Backends: `jsonl` (embedded default)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


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


class Store(Protocol):
    """Append-only event storage, one ordered log of JSON lines per domain.

    `append` returns only once the lines are durable (as configured) and raises a
    `LeitstandError` (lock timeout, disk full, storage failure, idempotency conflict) otherwise;
    a batch is stored whole or not at all.
    """

    async def append(
        self, domain: str, lines: list[bytes], idempotency: Idempotency | None = None
    ) -> AppendResult: ...

    async def close(self) -> None: ...
