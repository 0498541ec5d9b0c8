"""The body decoder as it was before its NDJSON fast path (commit 36e5b92), kept verbatim as
the reference `test_properties` compares `leitstand.decode.encode_events` against: same
lines, same events seen by the schema check, same error for every body."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import orjson

from leitstand.decode import DecodedBatch, EventCheck, MediaKind
from leitstand.domains import normalize_domain
from leitstand.errors import BadRequest, DomainMismatch, InvalidJSON, PayloadTooLarge

_DIGIT_MAP = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_RUN = b"0" * 19
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _has_long_number(data: bytes) -> bool:
    return _LONG_RUN in data.translate(_DIGIT_MAP)


def encode_events(
    body: bytes, kind: MediaKind, *, domain_param: str | None, max_events: int,
    check: EventCheck | None = None,
) -> DecodedBatch:
    """Parse `body`, settle the domain and encode every event as a stored line. `check` sees
    the domain and the events as they are stored (`domain` set) and raises to refuse them."""
    events = _parse(body, kind, max_events)
    domain = normalize_domain(domain_param) if domain_param is not None else None
    for event in events:
        if "domain" not in event:
            continue
        own = normalize_domain(event["domain"])
        if domain is None:
            domain = own
        elif own != domain:
            raise DomainMismatch(f"domain mismatch: event has {own!r}, request has {domain!r}")
    if domain is None:
        raise BadRequest("no domain: pass ?domain= or give the events a 'domain' field")
    lines = []
    for event in events:
        event["domain"] = domain
        try:
            # Not OPT_APPEND_NEWLINE: orjson then hands back its 4 KiB working buffer, kept
            # alive while the line waits for its group commit (~4 MB per 1,000-event request);
            # the concatenation is an exact-size copy.
            lines.append(orjson.dumps(event) + b"\n")
        except orjson.JSONEncodeError as exc:
            raise InvalidJSON(f"event cannot be stored as JSON: {exc}") from exc
    if check is not None:
        check(domain, events)
    return DecodedBatch(domain, lines)


def _parse(body: bytes, kind: MediaKind, max_events: int) -> list[dict[str, Any]]:
    if kind == "json":
        if not body.strip():
            raise BadRequest("empty body: send a JSON object or an array of objects")
        value = _loads(body)
        items = value if isinstance(value, list) else [value]
        if not items:
            raise BadRequest("empty array: send at least one event")
    else:
        lines = _ndjson_lines(body)
        # Stop collecting past the limit: a body of a million tiny lines must not become a
        # million objects in memory (it took 130 MiB for a 3 MB body) just to be refused.
        numbered = list(itertools.islice(lines, max_events + 1))
        if not numbered:
            raise BadRequest("empty body: send one JSON object per line")
        if len(numbered) > max_events:
            _check_count(len(numbered) + sum(1 for _ in lines), max_events)
        exact = _has_long_number(body)  # no long number in the body: none in any line
        items = [_loads(raw, n, exact=exact) for n, raw in numbered]
    _check_count(len(items), max_events)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"event {index} is not a JSON object")
    return items


def _ndjson_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of `body` with their 1-based numbers, one at a time."""
    start, number = 0, 0
    while start <= len(body):
        end = body.find(b"\n", start)
        if end < 0:
            end = len(body)
        number += 1
        raw = body[start:end]
        if raw.strip():
            yield number, raw
        start = end + 1


def _check_count(count: int, max_events: int) -> None:
    if count > max_events:
        raise PayloadTooLarge(
            f"{count} events in one request, more than the limit of {max_events}; split the batch"
        )


def _loads(data: bytes, line: int | None = None, *, exact: bool = True) -> Any:
    """Parse one JSON document (the body, or NDJSON line `line`). `exact=False`: the caller
    knows it holds no long number."""
    try:
        if exact and _has_long_number(data):
            return _loads_exact(data)
        return orjson.loads(data)
    except (orjson.JSONDecodeError, ValueError, RecursionError) as exc:
        where = "body" if line is None else f"line {line}"
        raise InvalidJSON(f"invalid JSON in {where}: {_short(exc)}") from exc


def _loads_exact(data: bytes) -> Any:
    def parse_int(text: str) -> int:
        number = int(text)
        if not _INT_MIN <= number <= _INT_MAX:
            raise ValueError(f"integer {text[:24]}… does not fit in 64 bits")
        return number

    def parse_float(text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"number {text[:24]} is out of range")
        return number

    def reject_constant(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(
        data.decode("utf-8"),
        parse_int=parse_int,
        parse_float=parse_float,
        parse_constant=reject_constant,
    )


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"
