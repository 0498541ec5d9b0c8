"""Request bodies → validated, compact JSONL lines.

Two steps, both bounded: `read_body` reads at most the size limit (Content-Length or chunked,
optionally gzip) and `encode_events` turns JSON or NDJSON into one line per event, with the
normalised domain set on each.
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson

from .domains import normalize_domain
from .errors import (
    BadRequest,
    DomainMismatch,
    InvalidJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
)

MediaKind = Literal["json", "ndjson"]

_MEDIA_TYPES: dict[str, MediaKind] = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/x-jsonlines": "ndjson",
}
# orjson turns integers beyond 64 bits into floats (silently losing digits); such numbers
# have at least 19 digits (-2**63 - 1 has 19), so only bodies with a run that long take the
# exact, slower path.
# (Found by mapping digits to b"0" and everything else to b" ", then a substring search: the
# same answer as re.search(rb"\d{19,}"), about 50 times faster, and it is run per body.)
_DIGIT_MAP = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_RUN = b"0" * 19


def _has_long_number(data: bytes) -> bool:
    return _LONG_RUN in data.translate(_DIGIT_MAP)

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def media_kind(content_type: str | None) -> MediaKind:
    """Map a Content-Type header to the body format; a missing header means JSON."""
    if not content_type:
        return "json"
    base = content_type.split(";", 1)[0].strip().lower()
    kind = _MEDIA_TYPES.get(base)
    if kind is None:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {base!r}: use application/json or application/x-ndjson"
        )
    return kind


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    content_encoding: str | None,
    limit: int,
) -> bytes:
    """Read the whole body, never holding much more than `limit` bytes (raw or decompressed)."""
    if content_length is not None:
        # isdigit() alone also accepts e.g. '²', which int() refuses
        if not (content_length.strip().isascii() and content_length.strip().isdigit()):
            raise BadRequest("invalid Content-Length")
        if int(content_length) > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflater: Any = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    elif encoding == "identity":
        inflater = None
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding!r}: use gzip or none"
        )
    received = 0
    out = bytearray()
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
        if inflater is None:
            out += chunk
            continue
        try:
            out += inflater.decompress(chunk, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadRequest("invalid gzip data") from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body larger than {limit} bytes")
    if inflater is not None:
        if not inflater.eof:
            raise BadRequest("truncated gzip data")
        if inflater.unused_data:
            raise BadRequest("unexpected data after the gzip stream")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Validated events of one request: all for one domain, each a compact `\\n`-ended line."""

    domain: str
    lines: list[bytes]


EventCheck = Callable[[str, list[dict[str, Any]]], None]


def encode_events(
    body: bytes, kind: MediaKind, *, domain_param: str | None, max_events: int,
    check: EventCheck | None = None,
) -> DecodedBatch:
    """Parse `body`, settle the domain and encode every event as a stored line. `check` sees
    the domain and the events as they are stored (`domain` set) and raises to refuse them."""
    events = _parse(body, kind, max_events)
    domain = _settle_domain(events, domain_param)
    for event in events:
        event["domain"] = domain
    try:
        # Not OPT_APPEND_NEWLINE: orjson then hands back its 4 KiB working buffer, kept
        # alive while the line waits for its group commit (~4 MB per 1,000-event request);
        # the concatenation is an exact-size copy.
        lines = [orjson.dumps(event) + b"\n" for event in events]
    except orjson.JSONEncodeError as exc:
        raise InvalidJSON(f"event cannot be stored as JSON: {exc}") from exc
    if check is not None:
        check(domain, events)
    return DecodedBatch(domain, lines)


_ABSENT = object()


def _settle_domain(events: list[dict[str, Any]], domain_param: str | None) -> str:
    """The normalised domain of the request: `?domain=`, else the events' own; every event's
    `domain`, where it has one, must normalise to it."""
    domain = _normalized(domain_param) if domain_param is not None else None
    for event in events:
        own = event.get("domain", _ABSENT)
        # Equal to the normalised domain: normalising it again would give the same.
        if own is _ABSENT or (domain is not None and own == domain):
            continue
        own = normalize_domain(own)
        if domain is None:
            domain = own
        elif own != domain:
            raise DomainMismatch(f"domain mismatch: event has {own!r}, request has {domain!r}")
    if domain is None:
        raise BadRequest("no domain: pass ?domain= or give the events a 'domain' field")
    return domain


# `?domain=` is the same on most requests of a producer; its regex check is ~1 us a request.
_normalized = lru_cache(maxsize=256)(normalize_domain)


def _parse(body: bytes, kind: MediaKind, max_events: int) -> list[dict[str, Any]]:
    if kind == "json":
        if not body.strip():
            raise BadRequest("empty body: send a JSON object or an array of objects")
        value = _loads(body)
        items = value if isinstance(value, list) else [value]
        if not items:
            raise BadRequest("empty array: send at least one event")
    else:
        at_once = _ndjson_at_once(body, max_events)
        items = at_once if at_once is not None else _ndjson_line_by_line(body, max_events)
    _check_count(len(items), max_events)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"event {index} is not a JSON object")
    return items


def _ndjson_at_once(body: bytes, max_events: int) -> list[Any] | None:
    """The common case in C calls only: at most `max_events` lines, each one JSON value, no
    long number. None if the body is anything else: `_ndjson_line_by_line` then decides,
    with its exact errors (and skipping blank lines, which fail here)."""
    if body.count(b"\n") > max_events or _has_long_number(body):
        return None
    lines = body.split(b"\n")
    if not lines[-1]:
        lines.pop()  # after the final newline
    if not lines:
        return None
    try:
        return [orjson.loads(line) for line in lines]
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return None


def _ndjson_line_by_line(body: bytes, max_events: int) -> list[Any]:
    """NDJSON the careful way: blank lines skipped, errors naming their line, long numbers
    exact, and memory bounded however many lines the body has."""
    lines = _ndjson_lines(body)
    # Stop collecting past the limit: a body of a million tiny lines must not become a
    # million objects in memory (it took 130 MiB for a 3 MB body) just to be refused.
    numbered = list(itertools.islice(lines, max_events + 1))
    if not numbered:
        raise BadRequest("empty body: send one JSON object per line")
    if len(numbered) > max_events:
        _check_count(len(numbered) + sum(1 for _ in lines), max_events)
    exact = _has_long_number(body)  # no long number in the body: none in any line
    return [_loads(raw, n, exact=exact) for n, raw in numbered]


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
