"""Hostile and broken request bodies and headers (in-process): each gets a clear 4xx with a JSON
`detail`, never a 5xx, and nothing of a rejected request is stored."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}


def stored(data_dir: Path, domain: str = "aussen") -> list[dict]:
    path = data_dir / f"{domain}.jsonl"
    if not path.exists():
        return []
    raw = path.read_bytes()
    assert raw.endswith(b"\n") or raw == b""
    return [orjson.loads(line) for line in raw.splitlines()]


def assert_rejected(response: httpx.Response, status: int, words: str, data_dir: Path) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert words.lower() in detail.lower(), detail
    assert stored(data_dir) == []


# -- empty, wrong type, wrong method ------------------------------------------------------------
@pytest.mark.parametrize("headers", [JSON, NDJSON, {}])
@pytest.mark.parametrize("body", [b"", b"   \n", b"\r\n\r\n"])
async def test_empty_body_is_400(client, data_dir, headers, body) -> None:
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=headers)
    assert_rejected(response, 400, "empty", data_dir)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x",
                     "application/x-www-form-urlencoded", "application/jsonx"],
)
async def test_wrong_content_type_is_415(client, data_dir, content_type) -> None:
    response = await client.post(
        "/v1/ingest?domain=aussen", content=b'{"a":1}', headers={"Content-Type": content_type}
    )
    assert_rejected(response, 415, "Content-Type", data_dir)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/v1/ingest", "/ingest/aussen"])
async def test_wrong_method_is_405_with_allow(client, data_dir, method, path) -> None:
    response = await client.request(method, path, content=b'{"a":1}', headers=JSON)
    assert_rejected(response, 405, "not allowed", data_dir)
    assert "POST" in response.headers["allow"]


# -- encodings of the text itself ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"a":"\xff"}', "invalid byte"),
        (b'{"a":"\xc0\xaf"}', "overlong encoding of '/'"),
        (b'{"a":"\xe0\x80\xaf"}', "3-byte overlong"),
        (b'{"a":"\xed\xa0\x80"}', "UTF-8-encoded surrogate"),
        (b'{"a":"\xf4\x90\x80\x80"}', "beyond U+10FFFF"),
        (b'{"a":"\xe2\x82"}', "truncated sequence"),
        (b'\xef\xbb\xbf{"a":1}', "UTF-8 BOM"),
        (b'\xff\xfe{\x00}\x00', "UTF-16 BOM"),
        (b'{"a":"\\ud800"}', "lone high surrogate escape"),
        (b'{"a":"\\udc00x"}', "lone low surrogate escape"),
        # a 20-digit number sends the body through the exact-integer parser: same answers there
        (b'{"n":12345678901234567890,"a":"\\ud800"}', "lone surrogate, exact path"),
        (b'{"n":12345678901234567890,"a":"\xc0\xaf"}', "overlong, exact path"),
        (b'\xef\xbb\xbf{"n":12345678901234567890}', "BOM, exact path"),
    ],
)
@pytest.mark.parametrize("headers", [JSON, NDJSON])
async def test_bad_text_encoding_is_400(client, data_dir, body, why, headers) -> None:
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=headers)
    assert_rejected(response, 400, "valid", data_dir)


async def test_valid_non_ascii_and_escaped_pairs_are_stored_exactly(client, data_dir) -> None:
    body = '{"t":"Grüße 🌡","e":"\\ud83c\\udf21","ctl":"\\u0000\\u001b"}'.encode()
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    assert stored(data_dir) == [
        {"t": "Grüße 🌡", "e": "🌡", "ctl": "\x00\x1b", "domain": "aussen"}
    ]
    # a stored line is one line: control characters stay escaped
    assert (data_dir / "aussen.jsonl").read_bytes().count(b"\n") == 1


# -- NDJSON framing: accepted -------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b'{"n":1}\r\n{"n":2}\r\n{"n":3}\r\n',  # CRLF
        b'\n\n{"n":1}\n\n\n{"n":2}\n   \n{"n":3}\n\n',  # blank lines, whitespace-only lines
        b'{"n":1}\n{"n":2}\n{"n":3}',  # no final newline
        b'\r\n{"n":1}\r\n\r\n{"n":2}\n{"n":3}',  # all of it mixed
    ],
)
async def test_ndjson_crlf_blank_lines_no_final_newline_are_accepted(
    client, data_dir, body
) -> None:
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=NDJSON)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 3
    raw = (data_dir / "aussen.jsonl").read_bytes()
    assert b"\r" not in raw
    assert raw == b"".join(b'{"n":%d,"domain":"aussen"}\n' % n for n in (1, 2, 3))


async def test_ndjson_bad_line_rejects_whole_batch_and_names_the_line(client, data_dir) -> None:
    body = b'{"n":1}\n\n{"n":2\n{"n":3}\n'
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=NDJSON)
    assert_rejected(response, 400, "line 3", data_dir)


# -- too many events ----------------------------------------------------------------------------
async def test_a_million_tiny_ndjson_events_are_413_with_clear_detail(
    make_client, data_dir
) -> None:
    body = b"{}\n" * 1_000_000  # 3 MB: the body limit is raised so that the event cap decides
    client = make_client(max_body=4 * 1024 * 1024, max_events=10_000)
    tracemalloc.start()
    try:
        response = await client.post("/v1/ingest?domain=aussen", content=body, headers=NDJSON)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_rejected(response, 413, "1000000 events in one request", data_dir)
    assert "limit of 10000" in response.json()["detail"]
    # refused without turning a million lines into a million objects (that took 130 MiB)
    assert peak < 24 * 1024 * 1024, f"peak {peak} bytes"


async def test_a_million_tiny_json_array_items_are_413(make_client, data_dir) -> None:
    body = b"[" + b",".join([b"{}"] * 1_000_000) + b"]"
    client = make_client(max_body=4 * 1024 * 1024, max_events=10_000)
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=JSON)
    assert_rejected(response, 413, "more than the limit of 10000", data_dir)


async def test_exactly_max_events_is_accepted(make_client, data_dir) -> None:
    client = make_client(max_events=500)
    response = await client.post(
        "/v1/ingest?domain=aussen", content=b"{}\n" * 500, headers=NDJSON
    )
    assert response.status_code == 202
    assert len(stored(data_dir)) == 500
    response = await client.post(
        "/v1/ingest?domain=aussen", content=b"{}\n" * 501, headers=NDJSON
    )
    assert response.status_code == 413
    assert len(stored(data_dir)) == 500


# -- numbers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "number",
    [
        b"18446744073709551616",  # 2**64
        b"-9223372036854775809",  # -2**63 - 1 (19 digits)
        b"99999999999999999999999999999999999999",
        b"-99999999999999999999",
    ],
)
async def test_integers_beyond_64_bits_are_400(client, data_dir, number) -> None:
    response = await client.post(
        "/v1/ingest?domain=aussen", content=b'{"n":' + number + b"}", headers=JSON
    )
    assert_rejected(response, 400, "64 bits", data_dir)


async def test_64_bit_integer_bounds_are_stored_exactly(client, data_dir) -> None:
    numbers = [b"18446744073709551615", b"9223372036854775807", b"9223372036854775808",
               b"-9223372036854775808", b"0", b"-1"]
    body = b"\n".join(b'{"n":' + n + b"}" for n in numbers)
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=NDJSON)
    assert response.status_code == 202, response.text
    raw = (data_dir / "aussen.jsonl").read_bytes().splitlines()
    assert raw == [b'{"n":' + n + b',"domain":"aussen"}' for n in numbers]


async def test_a_digit_run_inside_a_string_is_left_alone(client, data_dir) -> None:
    body = b'{"id":"123456789012345678901234567890","f":1.5}'
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=JSON)
    assert response.status_code == 202
    assert stored(data_dir) == [{"id": "123456789012345678901234567890", "f": 1.5,
                                 "domain": "aussen"}]


@pytest.mark.parametrize(
    "value", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"1e400", b"-1e400",
              b"12345678901234567890e400"],
)
async def test_nan_infinity_and_overflowing_floats_are_400(client, data_dir, value) -> None:
    response = await client.post(
        "/v1/ingest?domain=aussen", content=b'{"x":' + value + b"}", headers=JSON
    )
    assert_rejected(response, 400, "", data_dir)


# -- nesting ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        # the exact-integer parser (a 20-digit number) must survive the depth too
        b'{"a":' + b"[" * 100_000 + b"12345678901234567890" + b"]" * 100_000 + b"}",
    ],
)
@pytest.mark.parametrize("headers", [JSON, NDJSON])
async def test_100k_nested_arrays_are_400(client, data_dir, body, headers) -> None:
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=headers)
    assert_rejected(response, 400, "invalid JSON", data_dir)


async def test_non_object_items_are_400(client, data_dir) -> None:
    for body in (b"[1,2]", b'"x"', b"null", b'[{"a":1},[]]'):
        response = await client.post("/v1/ingest?domain=aussen", content=body, headers=JSON)
        assert_rejected(response, 400, "not a JSON object", data_dir)


# -- gzip ---------------------------------------------------------------------------------------
def gzip_bomb(inflated: int) -> bytes:
    """`inflated` zero bytes, gzip-compressed (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b"\0" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(inflated >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


async def test_gzip_bomb_is_413_without_inflating_it(make_client, data_dir) -> None:
    limit = 256 * 1024
    bomb = gzip_bomb(200 << 20)  # 200 MiB inflated
    assert len(bomb) < limit
    client = make_client(max_body=limit)
    tracemalloc.start()
    try:
        response = await client.post(
            "/v1/ingest?domain=aussen", content=bomb,
            headers={**JSON, "Content-Encoding": "gzip"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_rejected(response, 413, "decompressed body larger than", data_dir)
    # the decoder stops at the limit: memory stays a small multiple of it, not 200 MiB
    assert peak < 16 * limit, f"peak {peak} bytes"


async def test_gzip_exactly_at_the_limit_is_accepted(make_client, data_dir) -> None:
    event = b'{"pad":"' + b"x" * 1000 + b'"}\n'
    body = event * 64
    client = make_client(max_body=len(body))
    response = await client.post(
        "/v1/ingest?domain=aussen", content=gzip.compress(body),
        headers={**NDJSON, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 202, response.text
    assert len(stored(data_dir)) == 64


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (gzip.compress(b'{"a":1}' * 100)[:-10], "truncated gzip"),
        (gzip.compress(b'{"a":1}')[:5], "gzip"),
        (b'{"a":1}', "invalid gzip"),  # declared gzip, but plain
        (gzip.compress(b'{"a":1}') + b"junk", "after the gzip stream"),
    ],
)
async def test_broken_gzip_is_400(client, data_dir, body, words) -> None:
    response = await client.post(
        "/v1/ingest?domain=aussen", content=body,
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert_rejected(response, 400, words, data_dir)


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "zstd", "gzip, gzip"])
async def test_unknown_content_encoding_is_415(client, data_dir, encoding) -> None:
    response = await client.post(
        "/v1/ingest?domain=aussen", content=b'{"a":1}',
        headers={**JSON, "Content-Encoding": encoding},
    )
    assert_rejected(response, 415, "Content-Encoding", data_dir)


# -- headers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [b"abc", b"-1", b"1e3", b"\xb2", b"\xb9\xb3", b" ", b"12 34"])
async def test_invalid_content_length_is_400_never_500(client, data_dir, value) -> None:
    """Through ASGI a Content-Length reaches the app as it is (the real server's parser rejects
    most of these first); `²` (0xb2 in latin-1) passes str.isdigit() but not int()."""
    request = client.build_request("POST", "/v1/ingest?domain=aussen", content=b'{"a":1}')
    request.headers = httpx.Headers([(b"Content-Type", b"application/json"),
                                     (b"X-Auth", TOKEN.encode()), (b"Content-Length", value)])
    response = await client.send(request)
    assert_rejected(response, 400, "Content-Length", data_dir)


async def test_duplicate_x_auth_headers_are_401_even_if_both_valid(
    make_client, data_dir
) -> None:
    client = make_client(token=f"{TOKEN},second-token")
    for pair in ([TOKEN, TOKEN], [TOKEN, "second-token"], ["wrong", TOKEN]):
        headers = [("Content-Type", "application/json")] + [("X-Auth", v) for v in pair]
        request = client.build_request("POST", "/v1/ingest?domain=aussen", content=b'{"a":1}')
        request.headers = httpx.Headers(headers)
        request.headers["Content-Length"] = "7"
        response = await client.send(request)
        assert_rejected(response, 401, "more than one X-Auth", data_dir)


async def test_rejected_inputs_are_counted_by_reason(make_client: Callable, data_dir) -> None:
    client = make_client()
    await client.post("/v1/ingest?domain=aussen", content=b"", headers=JSON)
    await client.post("/v1/ingest?domain=aussen", content=b"{}", headers={"Content-Type": "x/y"})
    await client.get("/v1/ingest")
    text = (await client.get("/metrics")).text
    assert 'leitstand_rejections_total{reason="bad_request"} 1.0' in text
    assert 'leitstand_rejections_total{reason="unsupported_media_type"} 1.0' in text
    assert 'leitstand_rejections_total{reason="method_not_allowed"} 1.0' in text


async def test_endless_chunked_body_is_cut_off_at_the_limit(make_client, data_dir) -> None:
    """A chunked body (no Content-Length) that never ends: the server stops reading at the
    limit and answers 413; it does not drain the stream."""
    pulled = 0

    async def endless():
        nonlocal pulled
        while True:
            pulled += 1
            yield b'{"a":1}\n' * 1024  # 8 KiB per chunk, for ever

    client = make_client(max_body=64 * 1024)
    response = await client.post("/v1/ingest?domain=aussen", content=endless(), headers=NDJSON)
    assert_rejected(response, 413, "larger than 65536 bytes", data_dir)
    assert pulled <= 64 // 8 + 2, pulled


async def test_content_length_over_the_limit_is_413_before_reading(make_client, data_dir
                                                                   ) -> None:
    pulled = 0

    async def body():
        nonlocal pulled
        pulled += 1
        yield b"{}"

    client = make_client(max_body=1024)
    request = client.build_request("POST", "/v1/ingest?domain=aussen", content=body(),
                                   headers={**JSON, "Content-Length": "1025"})
    response = await client.send(request)
    assert_rejected(response, 413, "larger than 1024 bytes", data_dir)
    assert pulled == 0
