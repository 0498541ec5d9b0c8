"""X-Auth: constant-time bytes comparison, malformed values → 401 (never 500), checked before
the body is read; the operational endpoints are open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

import leitstand.access.tokens as tokens_module
from leitstand.access.tokens import TokenSet, digest_of, full_access

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

ROUTES = ["/v1/ingest?domain=aussen", "/ingest/aussen"]


def raw_headers(*pairs: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), *pairs]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        (None, "missing X-Auth"),
        (b"", "invalid X-Auth"),
        (b"wrong", "invalid X-Auth"),
        (TOKEN.encode() + b"x", "invalid X-Auth"),
        (TOKEN.encode()[:-1], "invalid X-Auth"),
        (TOKEN.upper().encode(), "invalid X-Auth"),
        ("tést-tökén".encode(), "invalid X-Auth"),  # non-ASCII (UTF-8)
        ("tést".encode("latin-1"), "invalid X-Auth"),  # non-ASCII, not UTF-8
        (b"\x80\xff\xfe", "invalid X-Auth"),
        (b"x" * 100_000, "invalid X-Auth"),  # huge
        (TOKEN.encode() + b"\x00", "invalid X-Auth"),
    ],
)
async def test_bad_token_is_401_and_nothing_stored(client, data_dir, route, auth,
                                                   fragment) -> None:
    headers = [(b"content-type", b"application/json")]
    if auth is not None:
        headers.append((b"x-auth", auth))
    # Raw byte headers, so that httpx does not refuse or re-encode the odd values.
    client.headers.pop("X-Auth")
    request = client.build_request("POST", route, content=b'{"n":1}')
    request.headers = httpx.Headers(headers)
    response = await client.send(request)
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": response.json()["detail"]}
    assert fragment in response.json()["detail"]
    assert not (data_dir / "aussen.jsonl").exists()


async def test_two_x_auth_headers_are_401(client, data_dir) -> None:
    client.headers.pop("X-Auth")
    request = client.build_request("POST", "/v1/ingest?domain=aussen", content=b'{"n":1}')
    request.headers = httpx.Headers([(b"x-auth", TOKEN.encode()), (b"x-auth", TOKEN.encode())])
    response = await client.send(request)
    assert response.status_code == 401
    assert "more than one" in response.json()["detail"]


def test_oversized_value_starting_with_the_token_never_matches() -> None:
    long_token = b"t" * 1024
    tokens = TokenSet([full_access("default", long_token)])
    assert tokens.identify(long_token) is not None
    assert tokens.identify(long_token + b"tail") is None


def test_token_compared_in_constant_time_as_bytes(monkeypatch) -> None:
    """The raw bytes are hashed once, and the digest is compared with every configured
    token's digest by hmac.compare_digest."""
    seen: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return a == b

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    tokens = TokenSet([full_access("default", b"one"), full_access("default", b"two")])
    assert tokens.identify(b"\xfftoken") is None
    given = digest_of(b"\xfftoken")
    assert seen == [(given, digest_of(b"one")), (given, digest_of(b"two"))]


async def test_rotation_accepts_every_configured_token(make_client, data_dir) -> None:
    client = make_client(token="old-token, new-token")
    for token in ("old-token", "new-token"):
        response = await client.post("/v1/ingest?domain=aussen", json={"t": token},
                                     headers={"X-Auth": token})
        assert response.status_code == 202
    response = await client.post("/v1/ingest?domain=aussen", json={}, headers={"X-Auth": TOKEN})
    assert response.status_code == 401


@pytest.mark.parametrize("route", ROUTES)
async def test_auth_is_checked_before_the_body_is_read(client, route) -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        pulled += 1
        yield b'{"n":1}'

    request = client.build_request("POST", route, content=body(),
                                   headers={"X-Auth": "wrong", "Content-Type": "text/csv"})
    response = await client.send(request)
    # 401 (not 415 for the content type): auth came first, and not one byte was pulled.
    assert response.status_code == 401
    assert pulled == 0


@pytest.mark.parametrize("path", ["/health", "/version", "/metrics", "/docs", "/openapi.json"])
async def test_operational_endpoints_need_no_auth(client, path) -> None:
    client.headers.pop("X-Auth")
    response = await client.get(path)
    assert response.status_code == 200
    assert "x-ratelimit-limit" not in response.headers


async def test_health_and_version_bodies(client) -> None:
    from leitstand import __version__

    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/version")).json() == {"version": __version__, "api": "v1"}
