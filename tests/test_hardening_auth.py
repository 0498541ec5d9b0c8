"""Auth under attack (in-process): token rotation with several tokens, every token compared in
constant time, failed attempts counted and rate-limited, the token never echoed; the client IP
for rate limits comes from X-Forwarded-For only through a trusted proxy."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

import leitstand.access.tokens as tokens_module
from leitstand.access.tokens import TokenSet, digest_of, full_access

pytestmark = pytest.mark.anyio

OLD, NEW, THIRD = "old-secret-1111", "new-secret-2222", "third-secret-3333"


def client_from(app: FastAPI, ip: str, port: int = 40000) -> httpx.AsyncClient:
    """A client whose TCP peer (the ASGI scope's `client`) is `ip`."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, port)),
                             base_url="http://test")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# -- rotation -----------------------------------------------------------------------------------
async def test_rotation_steps_from_the_operations_guide(make_client, data_dir) -> None:
    """Step 1: only OLD. Step 2: `OLD,NEW` — both work while clients move. Step 3: only NEW.
    (docs/operations.md, "Rotating the token without downtime", with these steps.)"""
    from pathlib import Path

    guide = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text(
        encoding="utf-8").split("### Rotating the token without downtime\n", 1)[1]
    assert "`LEITSTAND_TOKEN=<old>,<new>`" in guide and "`LEITSTAND_TOKEN=<new>`" in guide
    step1 = make_client(token=OLD)
    step2 = make_client(token=f" {OLD} , {NEW} ")  # spaces around the commas are trimmed
    step3 = make_client(token=NEW)

    async def code(client: httpx.AsyncClient, token: str) -> int:
        response = await client.post("/v1/ingest?domain=aussen", json={"t": token},
                                     headers={"X-Auth": token})
        return response.status_code

    assert [await code(step1, OLD), await code(step1, NEW)] == [202, 401]
    assert [await code(step2, OLD), await code(step2, NEW)] == [202, 202]
    assert [await code(step3, OLD), await code(step3, NEW)] == [401, 202]


@pytest.mark.parametrize("route", ["/v1/ingest?domain=aussen", "/ingest/aussen"])
async def test_every_one_of_several_tokens_works_on_every_route(make_client, route) -> None:
    client = make_client(token=f"{OLD},{NEW},{THIRD}")
    for token in (OLD, NEW, THIRD):
        response = await client.post(route, json={"t": token}, headers={"X-Auth": token})
        assert response.status_code in (200, 202), token
    for token in (f"{OLD},{NEW}", OLD + NEW, OLD[:-1], "", ","):
        response = await client.post(route, json={}, headers={"X-Auth": token})
        assert response.status_code == 401, token


@pytest.mark.parametrize("given", [OLD, NEW, THIRD, "nope"])
def test_check_token_compares_against_every_token_without_early_exit(monkeypatch, given) -> None:
    """Code review, made executable: hmac.compare_digest runs against each token, also when
    an earlier one already matched, so the time taken does not tell which token matched."""
    seen: list[bytes] = []
    real = tokens_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append(b)
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    secrets = (OLD.encode(), NEW.encode(), THIRD.encode())
    tokens = TokenSet(full_access("default", s) for s in secrets)
    found = tokens.identify(given.encode())
    assert (found is None) == (given == "nope")
    assert seen == [digest_of(s) for s in secrets]


# -- failed attempts: counted, rate-limited, never echoed ----------------------------------------
async def test_failed_attempts_are_counted_and_rate_limited(make_client, data_dir) -> None:
    client = make_client(rate_limit="5/minute")
    guesses = [f"guess-{n}" for n in range(8)]
    codes = []
    for guess in guesses:
        response = await client.post("/v1/ingest?domain=aussen", json={},
                                     headers={"X-Auth": guess})
        codes.append(response.status_code)
        for secret in (guess, "test-token"):
            assert secret not in response.text
            assert all(secret not in v for v in response.headers.values())
    assert codes == [401] * 5 + [429] * 3
    # after the guesses even the right token waits: guessing costs the guesser's whole budget
    response = await client.post("/v1/ingest?domain=aussen", json={})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    text = (await client.get("/metrics")).text
    assert metric(text, 'leitstand_rejections_total{reason="unauthorized"}') == 5
    assert metric(text, 'leitstand_rejections_total{reason="rate_limited"}') == 4
    assert not (data_dir / "aussen.jsonl").exists()
    for guess in guesses:
        assert guess not in text


async def test_guessing_from_one_ip_does_not_lock_out_another(make_client) -> None:
    app = make_client(rate_limit="3/minute").app
    attacker, user = client_from(app, "192.0.2.66"), client_from(app, "192.0.2.10")
    try:
        for n in range(5):
            await attacker.post("/ingest/aussen", json={}, headers={"X-Auth": f"g{n}"})
        response = await user.post("/ingest/aussen", json={}, headers={"X-Auth": "test-token"})
        assert response.status_code == 200
    finally:
        await attacker.aclose()
        await user.aclose()


# -- reverse proxies ----------------------------------------------------------------------------
async def remaining(client: httpx.AsyncClient, forwarded: str | None = None) -> int:
    headers = {"X-Auth": "test-token"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    response = await client.post("/ingest/aussen", json={}, headers=headers)
    return int(response.headers["x-ratelimit-remaining"])


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_client) -> None:
    """Without LEITSTAND_TRUSTED_PROXIES, or from a peer outside it, every request counts for
    the TCP peer: a fresh X-Forwarded-For per request buys no fresh budget."""
    for trusted in ((), ("10.0.0.0/8",)):
        app = make_client(rate_limit="100/minute", trusted_proxies=",".join(trusted)).app
        spoofer = client_from(app, "203.0.113.7")
        try:
            seen = [await remaining(spoofer, f"198.51.100.{n}") for n in range(5)]
            seen.append(await remaining(spoofer, "10.0.0.1"))  # claiming to be the proxy
            seen.append(await remaining(spoofer))
            assert seen == list(range(99, 92, -1)), seen
        finally:
            await spoofer.aclose()


async def test_trusted_proxy_forwards_the_client_ip(make_client) -> None:
    app = make_client(rate_limit="100/minute", trusted_proxies="10.0.0.1, ::1").app
    proxy, proxy6 = client_from(app, "10.0.0.1"), client_from(app, "::1")
    try:
        # two clients behind the proxy have their own budgets
        assert await remaining(proxy, "198.51.100.1") == 99
        assert await remaining(proxy, "198.51.100.1") == 98
        assert await remaining(proxy, "198.51.100.2") == 99
        # the same client through the IPv6 proxy is the same client
        assert await remaining(proxy6, "198.51.100.2") == 98
        assert await remaining(proxy6, "2001:db8::5") == 99
        # the proxy's own requests (no header) count for the proxy
        assert await remaining(proxy) == 99
    finally:
        await proxy.aclose()
        await proxy6.aclose()


async def test_spoofed_entries_before_the_proxy_hop_are_ignored(make_client) -> None:
    """The proxy appends the real peer; a client that sends its own X-Forwarded-For only adds
    entries to the left. The rightmost untrusted address counts."""
    app = make_client(rate_limit="100/minute", trusted_proxies="10.0.0.0/8").app
    proxy = client_from(app, "10.0.0.1")
    try:
        assert await remaining(proxy, "1.1.1.1, 198.51.100.9") == 99
        assert await remaining(proxy, "2.2.2.2, 198.51.100.9") == 98
        assert await remaining(proxy, "3.3.3.3, 198.51.100.9, 10.0.0.2") == 97  # proxy chain
        # garbage is never an identity: the walk stops at the last valid hop
        assert await remaining(proxy, "evil, 198.51.100.9") == 96
        assert await remaining(proxy, "198.51.100.9, unknown") == 99  # → the proxy itself
        assert await remaining(proxy, "") == 98
    finally:
        await proxy.aclose()
