"""Long domains get `-<8 hex>.jsonl` as the spec says. 32 bits collide: a birthday search finds
two long domains with the same file name in about a second. The store catches it: the second
domain gets 409 with a reason, its events never reach the first domain's file, and reading it
is 404 instead of the first domain's lines."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.domains import PLAIN_STEM_MAX, data_file_name, file_stem, normalize_domain

from .store_checks import stored_events

pytestmark = pytest.mark.anyio

PREFIX = ".".join(["x" * 63, "y" * 63, "z" * 63]) + "." + "w" * 44  # 236 characters


def birthday_pair() -> tuple[str, str]:
    """Two valid long domains that share a file name (same prefix, same 8 hex digits)."""
    seen: dict[str, str] = {}
    for n in range(2_000_000):
        domain = f"{PREFIX}{n:08x}"
        stem = file_stem(domain)
        if stem in seen:
            return seen[stem], domain
        seen[stem] = domain
    raise AssertionError("no collision among 2,000,000 domains: is the digest longer than 8 hex?")


def test_birthday_search_finds_two_long_domains_sharing_a_file_name() -> None:
    a, b = birthday_pair()
    assert a != b and normalize_domain(a) == a and normalize_domain(b) == b
    assert len(a) > PLAIN_STEM_MAX
    assert data_file_name(a) == data_file_name(b)
    assert data_file_name(a).endswith(".jsonl") and len(data_file_name(a).encode()) <= 255
    assert len(data_file_name(a).removesuffix(".jsonl").rsplit("-", 1)[1]) == 8


async def test_second_domain_with_the_same_file_name_gets_409(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    first, second = birthday_pair()
    for n in range(3):
        answer = await client.post("/v1/ingest", params={"domain": first}, json={"n": n})
        assert answer.status_code == 202, answer.text
    path = data_dir / data_file_name(first)
    before = path.read_bytes()

    refused = await client.post("/v1/ingest", params={"domain": second},
                                json=[{"n": 100}, {"n": 101}])
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "already belongs to the domain" in detail and first in detail
    assert path.read_bytes() == before  # nothing of the second domain was written

    assert (await client.get("/v1/events", params={"domain": second})).status_code == 404
    again = await client.post("/v1/ingest", params={"domain": first}, json={"n": 3})
    assert again.status_code == 202
    events = stored_events(path)
    assert [e["n"] for e in events] == [0, 1, 2, 3]
    assert {e["domain"] for e in events} == {first}  # only the first domain's own lines
    page = await client.get("/v1/events", params={"domain": first})
    assert [orjson.loads(x)["n"] for x in page.content.splitlines()] == [0, 1, 2, 3]
