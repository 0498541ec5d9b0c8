"""The decoder's fast paths change nothing: for random bodies — duplicate keys, unicode escapes,
odd whitespace, numbers of every shape (beyond 64 bits too), nesting, blank and broken lines,
`domain` fields that need normalising or clash — `encode_events` gives byte for byte the
lines, the events handed to the schema check, and the error of the decoder before them
(tests/decode_reference.py)."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from leitstand import decode
from leitstand.errors import LeitstandError

from . import decode_reference

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "60"))
MANY = settings(max_examples=EXAMPLES * 5, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

SPACE = st.sampled_from(["", "", " ", "\t", "  ", "\r"])
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["-0", "0.0", "-0.0", "1E5", "1e-7", "2.50", "1e400", "-1e400",
                     "18446744073709551615", "18446744073709551616",
                     "-9223372036854775808", "-9223372036854775809", "1" * 30,
                     "0.1234567890123456789012", "NaN", "Infinity"]),
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
KEYS = st.sampled_from(["a", "b", "domain", "domain", "é", "\u2028", "k"]) | TEXT
DOMAIN_VALUES = st.sampled_from(
    ['"aussen"', '"AUSSEN"', '" aussen. "', '"innen"', '"Innen.Haus"', '""', 'null', '1',
     '"bad_domain"', '"\\u0061ussen"', '["aussen"]'])


@st.composite
def strings(draw: st.DrawFn) -> str:
    text = draw(TEXT)
    return json.dumps(text, ensure_ascii=draw(st.booleans()))


def values(depth: int = 2) -> st.SearchStrategy[str]:
    scalar = st.one_of(NUMBERS, strings(), st.sampled_from(["true", "false", "null"]))
    if depth == 0:
        return scalar
    inner = values(depth - 1)
    return st.one_of(scalar, arrays(inner), objects(inner))


def arrays(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda items, sep: "[" + sep.join(items) + "]",
                     st.lists(inner, max_size=3), st.sampled_from([",", ", ", " ,\t"]))


def objects(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    @st.composite
    def build(draw: st.DrawFn) -> str:
        pairs = []
        for _ in range(draw(st.integers(0, 4))):
            key = draw(KEYS)
            value = draw(DOMAIN_VALUES) if key == "domain" else draw(inner)
            pairs.append(draw(SPACE) + json.dumps(key, ensure_ascii=draw(st.booleans()))
                         + draw(SPACE) + ":" + draw(SPACE) + value + draw(SPACE))
        return "{" + ",".join(pairs) + "}"

    return build()


EVENT = objects(values())
LINE = st.one_of(
    st.builds(lambda before, event, after: before + event + after, SPACE, EVENT, SPACE),
    st.sampled_from(["", " ", "\r", "\x0c", "\t \t", "{", "[1]", "1", "null", '"x"',
                     '{"a":1}{"b":2}', '{"a":1},{"b":2}', '{"a":[1', "2]}", "\ufeff{}"]),
)


def outcome(module: Any, body: bytes, kind: str, domain: str | None, max_events: int) -> Any:
    seen: list[Any] = []

    def check(batch_domain: str, events: list[dict[str, Any]]) -> None:
        seen.append((batch_domain, json.dumps(events)))

    try:
        batch = module.encode_events(body, kind, domain_param=domain, max_events=max_events,
                                     check=check)
    except LeitstandError as exc:
        return ("error", type(exc).__name__, exc.status, exc.detail, seen)
    return ("ok", batch.domain, batch.lines, seen)


PARAMS = st.sampled_from([None, "aussen", "AUSSEN.", " innen", "x..y"])


@MANY
@given(st.lists(st.one_of(EVENT, EVENT, LINE), max_size=7),
       st.sampled_from(["\n", "\r\n"]), st.booleans(), PARAMS, st.integers(1, 6))
@example(['{"a":1,"a":2}', '{"é":"\\u00e9\\/"}'], "\n", True, "aussen", 5)
@example(['{"domain":"aussen","domain":"innen"}'], "\n", False, None, 5)
@example(['{"n":123456789012345678901234567890}'], "\n", True, "aussen", 5)
@example(["{}", "", "{}"], "\n", True, "aussen", 2)
@example(['{"domain":null}'], "\n", True, None, 5)
@example(["{}", "{}", "{}"], "\n", False, "aussen", 2)
def test_ndjson_as_before(lines: list[str], newline: str, final_newline: bool,
                          domain: str | None, max_events: int) -> None:
    body = (newline.join(lines) + (newline if final_newline else "")).encode()
    assert outcome(decode, body, "ndjson", domain, max_events) == outcome(
        decode_reference, body, "ndjson", domain, max_events)


@MANY
@given(st.one_of(EVENT, arrays(EVENT), values()), SPACE, PARAMS, st.integers(1, 4),
       st.booleans())
def test_json_as_before(text: str, space: str, domain: str | None, max_events: int,
                        ascii_only: bool) -> None:
    body = (space + text + space).encode()
    if ascii_only:
        body = json.dumps(json.loads(text), ensure_ascii=True).encode() if _valid(text) else body
    assert outcome(decode, body, "json", domain, max_events) == outcome(
        decode_reference, body, "json", domain, max_events)


def _valid(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
