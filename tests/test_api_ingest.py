"""POST /v1/ingest and POST /ingest/{domain}, in-process: bodies, domains, limits, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest

from leitstand.decode import read_body
from leitstand.domains import _HASH_LEN, MAX_FILE_NAME, PLAIN_STEM_MAX, data_file_name
from leitstand.errors import PayloadTooLarge

pytestmark = pytest.mark.anyio

Client = Callable[..., httpx.AsyncClient]


def stored(data_dir: Path, domain: str) -> list[dict]:
    path = data_dir / data_file_name(domain)
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


# -- bodies ---------------------------------------------------------------------------------------
async def test_json_object_is_stored_compact_with_domain(client, data_dir) -> None:
    body = b'{\n  "event": "demo",\n  "status": "ok"\n}'
    response = await client.post("/v1/ingest?domain=aussen", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "accepted", "accepted": 1, "domain": "aussen"}
    assert (data_dir / "aussen.jsonl").read_bytes() == (
        b'{"event":"demo","status":"ok","domain":"aussen"}\n'
    )


async def test_json_array_is_one_line_per_event(client, data_dir) -> None:
    events = [{"n": 1}, {"n": 2}, {"n": 3}]
    response = await client.post("/v1/ingest?domain=aussen", json=events)
    assert response.status_code == 202
    assert response.json()["accepted"] == 3
    assert stored(data_dir, "aussen") == [{**e, "domain": "aussen"} for e in events]


async def test_ndjson_body(client, data_dir) -> None:
    body = b'{"n":1}\r\n\n{"n":2}\n'
    response = await client.post("/v1/ingest?domain=aussen", content=body,
                                 headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2
    assert stored(data_dir, "aussen") == [{"n": 1, "domain": "aussen"},
                                          {"n": 2, "domain": "aussen"}]


async def test_gzip_body(client, data_dir) -> None:
    body = gzip.compress(b'[{"n":1},{"n":2}]')
    response = await client.post("/v1/ingest?domain=aussen", content=body,
                                 headers={"Content-Type": "application/json",
                                          "Content-Encoding": "gzip"})
    assert response.status_code == 202, response.text
    assert stored(data_dir, "aussen") == [{"n": 1, "domain": "aussen"},
                                          {"n": 2, "domain": "aussen"}]


async def test_gzip_ndjson_on_legacy_route(client, data_dir) -> None:
    body = gzip.compress(b'{"n":1}\n{"n":2}\n')
    response = await client.post("/ingest/aussen", content=body,
                                 headers={"Content-Type": "application/x-ndjson",
                                          "Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.text == "ok"
    assert [e["n"] for e in stored(data_dir, "aussen")] == [1, 2]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_chunked_body_without_content_length(client, data_dir) -> None:
    # httpx sends an async iterator as `Transfer-Encoding: chunked`, without Content-Length.
    request = client.build_request("POST", "/v1/ingest?domain=aussen",
                                   content=chunks(b'[{"n"', b':1},', b'{"n":2}]'))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await client.send(request)
    assert response.status_code == 202, response.text
    assert [e["n"] for e in stored(data_dir, "aussen")] == [1, 2]


async def test_batch_is_all_or_nothing(client, data_dir) -> None:
    await client.post("/v1/ingest?domain=aussen", json={"n": 0})
    bad_batches = [
        b'[{"n":1},{"n":2},3]',  # non-object item at the end
        b'[{"n":1},{"n":2,"domain":"innen"}]',  # mismatch at the end
        b'[{"n":1},{"n":NaN}]',
    ]
    for body in bad_batches:
        response = await client.post("/v1/ingest?domain=aussen", content=body,
                                     headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body
    ndjson = b'{"n":1}\n{"n":2}\n{"n":\n'
    response = await client.post("/v1/ingest?domain=aussen", content=ndjson,
                                 headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 400
    assert "line 3" in response.json()["detail"]
    assert stored(data_dir, "aussen") == [{"n": 0, "domain": "aussen"}]


async def test_unsupported_content_type_and_encoding(client) -> None:
    response = await client.post("/v1/ingest?domain=aussen", content=b"n=1",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    response = await client.post("/v1/ingest?domain=aussen", content=b"{}",
                                 headers={"Content-Type": "application/json",
                                          "Content-Encoding": "br"})
    assert response.status_code == 415


# -- domain -------------------------------------------------------------------------------------
async def test_domain_from_events(client, data_dir) -> None:
    response = await client.post("/v1/ingest", json=[{"domain": "Aussen ", "n": 1},
                                                     {"n": 2}])
    assert response.status_code == 202
    assert response.json()["domain"] == "aussen"
    assert stored(data_dir, "aussen") == [{"domain": "aussen", "n": 1},
                                          {"n": 2, "domain": "aussen"}]


async def test_domain_param_is_normalised(client, data_dir) -> None:
    response = await client.post("/v1/ingest", params={"domain": " Example.COM. "},
                                 json={"domain": "example.com", "n": 1})
    assert response.status_code == 202
    assert response.json()["domain"] == "example.com"
    assert (data_dir / "example.com.jsonl").exists()


@pytest.mark.parametrize(
    ("url", "body", "fragment"),
    [
        ("/v1/ingest?domain=aussen", {"domain": "innen"}, "domain mismatch"),
        ("/v1/ingest", [{"domain": "a"}, {"domain": "b"}], "domain mismatch"),
        ("/v1/ingest", {"event": "x"}, "no domain"),
        ("/v1/ingest", [{"n": 1}, {"n": 2}], "no domain"),
        ("/v1/ingest?domain=", {"n": 1}, "empty"),
        ("/v1/ingest?domain=-bad", {"n": 1}, "invalid domain"),
        ("/v1/ingest?domain=a_b", {"n": 1}, "invalid domain"),
        ("/v1/ingest?domain=a..b", {"n": 1}, "invalid domain"),
        ("/v1/ingest?domain=" + "a" * 64, {"n": 1}, "invalid domain"),
        ("/v1/ingest?domain=" + ".".join(["a" * 63] * 4), {"n": 1}, "longer than 253"),
        ("/v1/ingest?domain=%C3%A4u%C3%9Fen", {"n": 1}, "invalid domain"),
        ("/v1/ingest", {"domain": 7}, "must be a string"),
        ("/ingest/a_b", {"n": 1}, "invalid domain"),
        ("/ingest/%20", {"n": 1}, "empty"),
        ("/ingest/aussen", {"domain": "innen"}, "domain mismatch"),
    ],
)
async def test_domain_errors_are_400(client, data_dir, url, body, fragment) -> None:
    response = await client.post(url, json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]
    assert not any(p.suffix == ".jsonl" for p in data_dir.iterdir())


def long_domain(length: int) -> str:
    """A valid FQDN of exactly `length` characters (labels of at most 63)."""
    labels, left = [], length
    while left > 0:
        size = min(63, left)
        if left - size == 1:  # never leave a lone dot
            size -= 2
        labels.append("x" * size)
        left -= size + 1
    domain = ".".join(labels)
    assert len(domain) == length
    return domain


@pytest.mark.parametrize("length", [211, 212, 234, 235, 236, 245, 249, 252, 253])
async def test_long_domains_every_created_file_name_fits(client, data_dir, length) -> None:
    domain = long_domain(length)
    response = await client.post(f"/v1/ingest?domain={domain}", json={"n": 1},
                                 headers={"Idempotency-Key": "k1"})
    assert response.status_code == 202, response.text
    # A torn tail makes the store write its quarantine file on the next append.
    data_file = data_dir / data_file_name(domain)
    with data_file.open("ab") as f:
        f.write(b'{"torn":')
    response = await client.post(f"/ingest/{domain}", json={"n": 2},
                                 headers={"Idempotency-Key": "k2"})
    assert response.status_code == 200, response.text
    assert [e["n"] for e in stored(data_dir, domain)] == [1, 2]
    names = [p.name for p in data_dir.rglob("*")]
    assert len(names) >= 4  # the data file, .leitstand/, the idempotency log, the quarantine
    assert all(len(os.fsencode(n)) <= MAX_FILE_NAME for n in names), names
    if length > PLAIN_STEM_MAX:
        digest = hashlib.sha256(domain.encode()).hexdigest()[:_HASH_LEN]
        assert data_file.name == f"{domain[:PLAIN_STEM_MAX]}-{digest}.jsonl"
    else:
        assert data_file.name == f"{domain}.jsonl"


def test_docs_state_the_long_domain_rule() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert f"Domains über {PLAIN_STEM_MAX} Zeichen" in readme
    assert f"{_HASH_LEN} Hex-Stellen des SHA-256" in readme
    storage = " ".join((root / "docs" / "storage.md").read_text(encoding="utf-8").split())
    assert f"Domains longer than {PLAIN_STEM_MAX} characters" in storage
    assert f"{_HASH_LEN} hex digits of the SHA-256" in storage


async def test_long_domains_sharing_a_prefix_get_different_files(client, data_dir) -> None:
    a = long_domain(250)
    b = a[:-1] + "y"
    for domain in (a, b):
        response = await client.post(f"/v1/ingest?domain={domain}", json={"d": domain})
        assert response.status_code == 202
    assert data_file_name(a) != data_file_name(b)
    assert stored(data_dir, a)[0]["d"] == a
    assert stored(data_dir, b)[0]["d"] == b


# -- rejected input -----------------------------------------------------------------------------
BAD_INPUT = [
    ("invalid JSON", b'{"event": ', "application/json", "invalid JSON"),
    ("invalid UTF-8", b'{"event": "\xff\xfe"}', "application/json", "invalid JSON"),
    ("invalid UTF-8 ndjson", b'{"e":"\xc3\x28"}\n', "application/x-ndjson", "invalid JSON"),
    ("NaN", b'{"v": NaN}', "application/json", "invalid JSON"),
    ("Infinity", b'{"v": Infinity}', "application/json", "invalid JSON"),
    ("-Infinity", b'{"v": -Infinity}', "application/json", "invalid JSON"),
    ("overflow to infinity", b'{"v": 1e400}', "application/json", "invalid JSON"),
    ("NaN with a long number", b'{"v": NaN, "w": 123456789012345678901}', "application/json",
     "invalid JSON"),
    ("NaN ndjson", b'{"v": 1}\n{"v": NaN}\n', "application/x-ndjson", "line 2"),
    ("deep nesting", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "application/json",
     "invalid JSON"),
    ("deep arrays", b"[" * 5000 + b"]" * 5000, "application/json", "invalid JSON"),
    ("nesting too deep to store", b'{"domain":"aussen","a":' + b'{"a":' * 300 + b"1"
     + b"}" * 301, "application/json", "cannot be stored"),
    ("deep nesting with a long number",
     b'{"n": 123456789012345678901, "a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "application/json", "invalid JSON"),
    ("integer over 64 bits", b'{"n": 123456789012345678901234567890}', "application/json",
     "64 bits"),
    ("non-object first item", b'[1, {"domain": "aussen"}]', "application/json",
     "not a JSON object"),
    ("string body", b'"aussen"', "application/json", "not a JSON object"),
    ("null body", b"null", "application/json", "not a JSON object"),
    ("non-object ndjson line", b'[1]\n{"domain":"aussen"}\n', "application/x-ndjson",
     "not a JSON object"),
    ("empty body", b"", "application/json", "empty body"),
    ("empty array", b"[]", "application/json", "empty array"),
    ("empty ndjson", b"\n\n", "application/x-ndjson", "empty body"),
]


@pytest.mark.parametrize(("name", "body", "ctype", "fragment"), BAD_INPUT,
                         ids=[case[0] for case in BAD_INPUT])
@pytest.mark.parametrize("url", ["/v1/ingest", "/v1/ingest?domain=aussen", "/ingest/aussen"])
async def test_bad_input_is_400_with_reason(client, data_dir, url, name, body, ctype,
                                            fragment) -> None:
    response = await client.post(url, content=body, headers={"Content-Type": ctype})
    assert response.status_code == 400, (name, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    # Without a domain every one of these is refused for the body itself, not for the domain.
    assert fragment in detail, detail
    assert not (data_dir / "aussen.jsonl").exists()


async def test_valid_edge_values_are_stored_as_valid_json(client, data_dir) -> None:
    body = (b'{"big": 18446744073709551615, "neg": -9223372036854775808, "f": 1.5e300, '
            b'"s": "\\u00e4\\ud83d\\ude00", "nested": ' + b"[" * 200 + b"]" * 200 + b"}")
    response = await client.post("/v1/ingest?domain=aussen", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    line = (data_dir / "aussen.jsonl").read_bytes()
    event = json.loads(line)  # the stdlib parser: strict about what it accepts
    assert event["big"] == 2**64 - 1
    assert event["neg"] == -(2**63)
    assert event["s"] == "ä😀"


# -- body limit ---------------------------------------------------------------------------------
async def test_content_length_over_limit_is_413_before_reading(make_client, data_dir) -> None:
    client = make_client(max_body=100)
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        pulled += 1
        yield b"x" * 200

    request = client.build_request("POST", "/v1/ingest?domain=aussen", content=body(),
                                   headers={"Content-Length": "200"})
    response = await client.send(request)
    assert response.status_code == 413
    assert "larger than 100 bytes" in response.json()["detail"]
    assert pulled == 0


async def test_body_exactly_at_limit_is_accepted(make_client, data_dir) -> None:
    body = b'{"pad":"' + b"x" * 80 + b'"}'
    client = make_client(max_body=len(body))
    response = await client.post("/v1/ingest?domain=aussen", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 202
    response = await client.post("/v1/ingest?domain=aussen", content=body + b" ",
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 413


async def test_chunked_body_over_limit_stops_reading(make_client, data_dir) -> None:
    limit = 64 * 1024
    client = make_client(max_body=limit)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(10_000):  # 160 MB if nobody stopped us
            sent += 16 * 1024
            yield b" " * (16 * 1024)

    response = await client.post("/v1/ingest?domain=aussen", content=endless())
    assert response.status_code == 413
    # The transport pulls the body as the service reads it: reading stopped past the limit.
    assert sent <= limit + 2 * 16 * 1024, sent
    assert not (data_dir / "aussen.jsonl").exists()


async def test_limit_counts_bytes_read_not_content_length() -> None:
    """The limit applies to the bytes read, whatever Content-Length claims."""

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 600
        yield b"x" * 600

    with pytest.raises(PayloadTooLarge):
        await read_body(body(), content_length="10", content_encoding=None, limit=1000)


async def test_gzip_bomb_is_413_on_decompressed_size(make_client, data_dir) -> None:
    client = make_client(max_body=64 * 1024)
    bomb = gzip.compress(b'{"pad":"' + b"a" * (50 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024
    response = await client.post("/v1/ingest?domain=aussen", content=bomb,
                                 headers={"Content-Type": "application/json",
                                          "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed" in response.json()["detail"]


async def test_decompressed_size_limit_counts_output_bytes(make_client, data_dir) -> None:
    raw = b'{"pad":"' + b"a" * 2000 + b'"}'
    client = make_client(max_body=len(raw))
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    ok = await client.post("/v1/ingest?domain=aussen", content=gzip.compress(raw),
                           headers=headers)
    assert ok.status_code == 202
    over = await client.post("/v1/ingest?domain=aussen", content=gzip.compress(raw + b" "),
                             headers=headers)
    assert over.status_code == 413


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not gzip at all", "invalid gzip"),
        (gzip.compress(b'{"n":1}')[:-6], "truncated gzip"),
        (gzip.compress(b'{"n":1}') + b"junk", "after the gzip stream"),
    ],
)
async def test_broken_gzip_is_400(client, body, fragment) -> None:
    response = await client.post("/v1/ingest?domain=aussen", content=body,
                                 headers={"Content-Type": "application/json",
                                          "Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


async def test_too_many_events_is_413(make_client, data_dir) -> None:
    client = make_client(max_events=3)
    response = await client.post("/v1/ingest?domain=aussen", json=[{"n": i} for i in range(4)])
    assert response.status_code == 413
    response = await client.post("/v1/ingest?domain=aussen", json=[{"n": i} for i in range(3)])
    assert response.status_code == 202
