"""Property tests (hypothesis) for the two pure parts every request goes through: the domain →
file name mapping and the body decoder."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import string
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from leitstand.decode import encode_events, media_kind, read_body
from leitstand.domains import (
    HELPER_SUFFIXES,
    MAX_DOMAIN,
    MAX_FILE_NAME,
    PLAIN_STEM_MAX,
    data_file_name,
    file_stem,
    normalize_domain,
)
from leitstand.errors import InvalidDomain, LeitstandError

DATA_DIR = "/srv/leitstand/data"
# Kept short for the default run (2 shared cores); raise with HYPOTHESIS_EXAMPLES for long runs.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "60"))
FAST = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------
ALNUM = string.ascii_lowercase + string.digits
ONE = st.sampled_from(ALNUM)
# a label: [a-z0-9], or [a-z0-9] + up to 61 of [a-z0-9-] + [a-z0-9]
LABEL = st.builds(lambda first, middle, last: first + (middle + last if last else ""),
                  ONE, st.text(ALNUM + "-", max_size=61), st.none() | ONE)
SHORT_DOMAINS = st.lists(LABEL, min_size=1, max_size=6).map(".".join)
# long domains: near and beyond the length where stems are cut and hashed
LONG_DOMAINS = st.builds(
    lambda a, b, c, tail: ".".join([a, b, c, tail]),
    st.just("a" * 63) | LABEL, st.just("b" * 63), st.just("c" * 63), LABEL,
)
DOMAINS = (SHORT_DOMAINS | LONG_DOMAINS).filter(lambda d: len(d) <= MAX_DOMAIN)


def file_names(domain: str) -> list[str]:
    return [file_stem(domain) + suffix for suffix in HELPER_SUFFIXES]


# -- domain → file ------------------------------------------------------------------------------
@FAST
@given(DOMAINS)
@example("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61)  # exactly 253
@example("x")
def test_every_file_name_fits_and_stays_inside_the_data_dir(domain: str) -> None:
    assert normalize_domain(domain) == domain
    assert data_file_name(domain) == file_stem(domain) + ".jsonl"
    for name in file_names(domain):
        assert len(os.fsencode(name)) <= MAX_FILE_NAME, (len(name), name)
        assert "/" not in name and "\0" not in name
        assert name not in (".", "..") and not name.startswith(".")  # never .leitstand
        path = os.path.normpath(os.path.join(DATA_DIR, name))
        assert os.path.dirname(path) == DATA_DIR


@FAST
@given(st.text(max_size=300) | st.text(alphabet=string.printable, max_size=300))
@example("../../etc/passwd")
@example("..")
@example(".leitstand")
@example("a/b")
@example("aussen\x00")
@example("\u212aitchen")  # KELVIN SIGN lower-cases to an ASCII 'k'
@example("AUSSEN.")
def test_normalize_domain_accepts_only_safe_names(raw: str) -> None:
    try:
        domain = normalize_domain(raw)
    except InvalidDomain:
        return
    assert domain.isascii() and domain == domain.lower()
    assert 0 < len(domain) <= MAX_DOMAIN
    assert set(domain) <= set(string.ascii_lowercase + string.digits + "-.")
    assert normalize_domain(domain) == domain  # idempotent
    for name in file_names(domain):
        assert len(os.fsencode(name)) <= MAX_FILE_NAME
        assert os.path.dirname(os.path.normpath(os.path.join(DATA_DIR, name))) == DATA_DIR


@FAST
@given(st.sets(DOMAINS, min_size=2, max_size=40))
def test_distinct_domains_never_share_a_file(domains: set[str]) -> None:
    for index in range(len(HELPER_SUFFIXES)):
        names = {file_names(d)[index] for d in domains}
        assert len(names) == len(domains)


@FAST
@given(st.sets(st.text(ALNUM, min_size=1, max_size=17), min_size=2, max_size=40))
def test_long_domains_with_one_prefix_never_share_a_file(tails: set[str]) -> None:
    prefix = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 45  # 237 chars
    domains = {f"{prefix}.{tail}"[:MAX_DOMAIN] for tail in tails}
    assert len({file_stem(d) for d in domains}) == len(domains)


def test_plain_and_hashed_stems_never_collide() -> None:
    """A domain short enough to be its own stem never equals a cut-and-hashed stem."""
    plain = "p" * PLAIN_STEM_MAX
    hashed = file_stem("p" * 63 + "." + "p" * 63 + "." + "p" * 63 + "." + "p" * 60)
    assert file_stem(plain) == plain
    assert len(hashed) > PLAIN_STEM_MAX


def test_birthday_search_finds_a_shared_file_name() -> None:
    """With the spec's 8 hex digits two long domains can share a file name, and a birthday
    search finds such a pair quickly; tests/test_store_domain_collision.py shows that the store
    refuses the second domain (409) instead of mixing it into the first one's file."""
    from .test_store_domain_collision import birthday_pair

    a, b = birthday_pair()
    assert a != b and file_stem(a) == file_stem(b)


# -- body decoder -------------------------------------------------------------------------------
INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=12,
)
EVENTS = st.dictionaries(TEXT.filter(lambda k: k != "domain"), JSON_VALUES, max_size=8)


def round_trip(lines: list[bytes]) -> list[dict[str, Any]]:
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line
    return [orjson.loads(line) for line in lines]


@FAST
@given(st.lists(EVENTS, min_size=1, max_size=5), DOMAINS)
def test_json_bodies_round_trip_with_domain_set(events: list[dict], domain: str) -> None:
    for body in (orjson.dumps(events), json.dumps(events, indent=2).encode(),
                 json.dumps(events, ensure_ascii=True).encode()):
        batch = encode_events(body, "json", domain_param=domain.upper(), max_events=100)
        assert batch.domain == domain
        assert round_trip(batch.lines) == [{**e, "domain": domain} for e in events]


@FAST
@given(st.lists(EVENTS, min_size=1, max_size=5), DOMAINS, st.sampled_from(["\n", "\r\n"]),
       st.booleans())
def test_ndjson_bodies_round_trip_with_domain_from_the_events(
    events: list[dict], domain: str, newline: str, final_newline: bool
) -> None:
    with_domain = [{**e, "domain": domain} for e in events]
    body = newline.join(json.dumps(e) for e in with_domain) + (newline if final_newline else "")
    batch = encode_events(body.encode(), "ndjson", domain_param=None, max_events=100)
    assert batch.domain == domain
    assert round_trip(batch.lines) == with_domain


@FAST
@given(EVENTS)
def test_a_single_event_round_trips_byte_for_byte_when_compact(event: dict) -> None:
    body = orjson.dumps({**event, "domain": "aussen"})
    batch = encode_events(body, "json", domain_param=None, max_events=1)
    assert batch.lines == [body + b"\n"]


@FAST
@given(st.binary(max_size=600), st.sampled_from(["json", "ndjson"]),
       st.none() | st.just("aussen") | TEXT)
def test_random_bytes_raise_only_leitstand_errors(body: bytes, kind: str, domain: Any) -> None:
    try:
        batch = encode_events(body, kind, domain_param=domain, max_events=50)  # type: ignore[arg-type]
    except LeitstandError as exc:
        assert 400 <= exc.status < 500
        return
    round_trip(batch.lines)


@FAST
@given(st.lists(EVENTS, min_size=1, max_size=4), st.data())
def test_mutated_json_raises_only_leitstand_errors(events: list[dict], data: st.DataObject
                                                   ) -> None:
    body = bytearray(orjson.dumps(events))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body)))
        body[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    for kind in ("json", "ndjson"):
        try:
            batch = encode_events(bytes(body), kind, domain_param="aussen", max_events=50)
        except LeitstandError as exc:
            assert 400 <= exc.status < 500
            continue
        round_trip(batch.lines)


@FAST
@given(st.text(max_size=60))
def test_media_kind_raises_only_leitstand_errors(content_type: str) -> None:
    try:
        assert media_kind(content_type) in ("json", "ndjson")
    except LeitstandError as exc:
        assert exc.status == 415


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _read(parts: list[bytes], **kwargs: Any) -> bytes:
    return asyncio.run(read_body(_chunks(parts), **kwargs))


@FAST
@given(st.binary(max_size=3000), st.lists(st.integers(0, 4000), max_size=6),
       st.integers(1, 4000), st.booleans())
def test_read_body_returns_the_body_or_a_leitstand_error(
    body: bytes, cuts: list[int], limit: int, compress: bool
) -> None:
    wire = gzip.compress(body) if compress else body
    kwargs: dict[str, Any] = {
        "content_length": None, "content_encoding": "gzip" if compress else None,
        "limit": limit,
    }
    try:
        assert _read(_split(wire, cuts), **kwargs) == body
        assert len(body) <= limit and len(wire) <= limit
    except LeitstandError as exc:
        assert exc.status == 413
        assert len(body) > limit or len(wire) > limit


@FAST
@given(st.binary(max_size=2000), st.lists(st.integers(0, 3000), max_size=6),
       st.sampled_from([None, "gzip", "x-gzip", "identity", "GZIP"]),
       st.none() | st.text(max_size=12))
def test_read_body_on_random_bytes_raises_only_leitstand_errors(
    wire: bytes, cuts: list[int], encoding: str | None, content_length: str | None
) -> None:
    try:
        _read(_split(wire, cuts), content_length=content_length,
              content_encoding=encoding, limit=1000)
    except LeitstandError as exc:
        assert 400 <= exc.status < 500


@pytest.mark.parametrize("size", [0, 1, 999, 1000])
def test_read_body_limit_is_exact(size: int) -> None:
    assert _read([b"x" * size], content_length=None, content_encoding=None, limit=1000) == (
        b"x" * size
    )
    with pytest.raises(LeitstandError):
        _read([b"x" * 1001], content_length=None, content_encoding=None, limit=1000)
