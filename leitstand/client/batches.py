"""Events → NDJSON request bodies that stay within the server's limits.

Batch boundaries depend only on the input and the two limits, so the same file always splits
the same way — which is what lets `leitstand send --file` derive stable Idempotency-Keys.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import RejectedError, TooLargeError


@dataclass(frozen=True)
class Batch:
    """One request body. `offset`: byte offset of its first line in the input stream;
    `first_line`/`last_line`: 1-based line numbers in the input (blank lines count)."""

    body: bytes
    events: int
    offset: int
    first_line: int
    last_line: int


def encode_event(event: Any) -> bytes:
    """One event as a compact JSON line (no trailing newline); refuses what JSON cannot carry."""
    if not isinstance(event, Mapping):
        raise RejectedError(f"an event must be a JSON object (a dict), not {type(event).__name__}")
    try:
        text = json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise RejectedError(f"event is not valid JSON: {exc}") from exc
    return text.encode("utf-8")


def event_lines(events: Iterable[Any]) -> Iterator[bytes]:
    for event in events:
        yield encode_event(event) + b"\n"


class Batcher:
    """Groups raw NDJSON lines (as read, newline included or not) into batches of at most
    `max_body` bytes and `max_events` events. Blank lines are skipped (but counted). Feed lines
    with `add` (which returns a batch when one is full), then call `finish` for the rest."""

    def __init__(self, *, max_body: int, max_events: int, start_offset: int = 0) -> None:
        self.max_body = max_body
        self.max_events = max_events
        self._parts: list[bytes] = []
        self._size = 0
        self._offset = start_offset
        self._batch_offset = start_offset
        self._line_no = 0
        self._first_line = 1

    def add(self, raw: bytes) -> Batch | None:
        self._line_no += 1
        raw_offset = self._offset
        self._offset += len(raw)
        if not raw.strip():
            return None
        line = raw if raw.endswith(b"\n") else raw + b"\n"
        if len(line) > self.max_body:
            raise TooLargeError(f"line {self._line_no} is {len(line)} bytes, more than the "
                                f"body limit of {self.max_body}")
        full = None
        if self._parts and (self._size + len(line) > self.max_body
                            or len(self._parts) >= self.max_events):
            full = self._cut(self._line_no - 1)
        if not self._parts:
            self._batch_offset, self._first_line = raw_offset, self._line_no
        self._parts.append(line)
        self._size += len(line)
        return full

    def finish(self) -> Batch | None:
        return self._cut(self._line_no) if self._parts else None

    def _cut(self, last_line: int) -> Batch:
        batch = Batch(b"".join(self._parts), len(self._parts), self._batch_offset,
                      self._first_line, last_line)
        self._parts, self._size = [], 0
        return batch


def split_lines(
    lines: Iterable[bytes], *, max_body: int, max_events: int, start_offset: int = 0
) -> Iterator[Batch]:
    """The batches of `lines` (see `Batcher`); the same input always splits the same way."""
    batcher = Batcher(max_body=max_body, max_events=max_events, start_offset=start_offset)
    for raw in lines:
        batch = batcher.add(raw)
        if batch is not None:
            yield batch
    last = batcher.finish()
    if last is not None:
        yield last


async def split_lines_async(
    lines: AsyncIterable[bytes], *, max_body: int, max_events: int
) -> AsyncIterator[Batch]:
    """`split_lines` for an async source of lines."""
    batcher = Batcher(max_body=max_body, max_events=max_events)
    async for raw in lines:
        batch = batcher.add(raw)
        if batch is not None:
            yield batch
    last = batcher.finish()
    if last is not None:
        yield last


async def event_lines_async(events: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    async for event in events:
        yield encode_event(event) + b"\n"
