"""Events → NDJSON request bodies that stay within the server's limits.

Batch boundaries depend only on the input and the two limits, so the same file always splits
the same way — which is what lets `leitstand send --file` derive stable Idempotency-Keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
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


def split_lines(
    lines: Iterable[bytes], *, max_body: int, max_events: int, start_offset: int = 0
) -> Iterator[Batch]:
    """Group raw NDJSON lines (as read, newline included or not) into batches of at most
    `max_body` bytes and `max_events` events. Blank lines are skipped (but counted)."""
    parts: list[bytes] = []
    size = 0
    offset = start_offset
    batch_offset = start_offset
    line_no = 0
    first_line = 1
    for raw in lines:
        line_no += 1
        raw_offset = offset
        offset += len(raw)
        if not raw.strip():
            continue
        line = raw if raw.endswith(b"\n") else raw + b"\n"
        if len(line) > max_body:
            raise TooLargeError(
                f"line {line_no} is {len(line)} bytes, more than the body limit of {max_body}"
            )
        if parts and (size + len(line) > max_body or len(parts) >= max_events):
            yield Batch(b"".join(parts), len(parts), batch_offset, first_line, line_no - 1)
            parts, size = [], 0
        if not parts:
            batch_offset, first_line = raw_offset, line_no
        parts.append(line)
        size += len(line)
    if parts:
        yield Batch(b"".join(parts), len(parts), batch_offset, first_line, line_no)
