"""Rate limit: per client IP across all ingest routes, counted before auth, with headers."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


def client_from(app, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 1234)),
        base_url="http://test",
        headers={"X-Auth": "test-token"},
    )


async def test_headers_on_every_ingest_answer(make_client) -> None:
    client = make_client(rate_limit="5/minute")
    answers = [
        await client.post("/v1/ingest?domain=aussen", json={"n": 1}),  # 202
        await client.post("/ingest/aussen", json={"n": 2}),  # 200
        await client.post("/v1/ingest", json={"n": 3}),  # 400
        await client.post("/v1/ingest?domain=aussen", json={}, headers={"X-Auth": "no"}),  # 401
    ]
    assert [a.status_code for a in answers] == [202, 200, 400, 401]
    for left, answer in zip([4, 3, 2, 1], answers, strict=True):
        assert answer.headers["X-RateLimit-Limit"] == "5"
        assert answer.headers["X-RateLimit-Remaining"] == str(left)
        assert 1 <= int(answer.headers["X-RateLimit-Reset"]) <= 60


async def test_429_with_retry_after_across_both_routes(make_client, data_dir) -> None:
    client = make_client(rate_limit="3/minute")
    assert (await client.post("/v1/ingest?domain=aussen", json={"n": 1})).status_code == 202
    assert (await client.post("/ingest/aussen", json={"n": 2})).status_code == 200
    assert (await client.post("/v1/ingest?domain=innen", json={"n": 3})).status_code == 202
    for url in ("/ingest/aussen", "/v1/ingest?domain=aussen", "/ingest/other"):
        response = await client.post(url, json={"n": 4})
        assert response.status_code == 429, url
        assert response.json() == {"detail": "rate limit exceeded"}
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert response.headers["X-RateLimit-Reset"] == response.headers["Retry-After"]
    lines = (data_dir / "aussen.jsonl").read_bytes().splitlines()
    assert len(lines) == 2


async def test_wrong_tokens_consume_the_limit(make_client) -> None:
    client = make_client(rate_limit="3/minute")
    for _ in range(3):
        response = await client.post("/v1/ingest?domain=aussen", json={},
                                     headers={"X-Auth": "guess"})
        assert response.status_code == 401
    # Token guessing is limited, and the right token does not reset the count.
    guess = await client.post("/ingest/aussen", json={}, headers={"X-Auth": "guess"})
    assert guess.status_code == 429
    right = await client.post("/v1/ingest?domain=aussen", json={"n": 1})
    assert right.status_code == 429


async def test_missing_token_consumes_the_limit_too(make_client) -> None:
    client = make_client(rate_limit="2/minute")
    client.headers.pop("X-Auth")
    codes = [(await client.post("/ingest/aussen", json={})).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


async def test_limit_is_per_client_ip(make_client) -> None:
    app = make_client(rate_limit="2/minute").app
    a, b = client_from(app, "10.0.0.1"), client_from(app, "10.0.0.2")
    try:
        assert [(await a.post("/ingest/aussen", json={})).status_code for _ in range(3)] == [
            200, 200, 429]
        assert (await b.post("/v1/ingest?domain=aussen", json={})).status_code == 202
    finally:
        await a.aclose()
        await b.aclose()


async def test_forwarded_for_only_from_trusted_proxies(make_client) -> None:
    app = make_client(rate_limit="1/minute", trusted_proxies="10.0.0.0/8").app
    proxy, direct = client_from(app, "10.1.1.1"), client_from(app, "192.0.2.9")
    try:
        for ip in ("198.51.100.1", "198.51.100.2"):
            response = await proxy.post("/ingest/aussen", json={},
                                        headers={"X-Forwarded-For": f"{ip}, 10.2.2.2"})
            assert response.status_code == 200, ip
        # An untrusted peer cannot pick a fresh identity by sending X-Forwarded-For.
        codes = [
            (await direct.post("/ingest/aussen", json={},
                               headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code
            for i in range(2)
        ]
        assert codes == [200, 429]
    finally:
        await proxy.aclose()
        await direct.aclose()


async def test_open_endpoints_are_not_limited(make_client) -> None:
    client = make_client(rate_limit="1/minute")
    assert (await client.post("/ingest/aussen", json={})).status_code == 200
    assert (await client.post("/ingest/aussen", json={})).status_code == 429
    for path in ("/health", "/version", "/metrics", "/openapi.json", "/docs"):
        assert (await client.get(path)).status_code == 200, path


# -- the moving window itself (leitstand.http.ratelimit.MovingWindow), on a fake clock ----------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_moving_window_allows_amount_in_any_window() -> None:
    from leitstand.http.ratelimit import MovingWindow

    clock = FakeClock()
    window = MovingWindow(3, 60, clock)
    assert window.hit("a") == (True, 2, 60)
    clock.now += 10
    assert window.hit("a") == (True, 1, 50)
    clock.now += 10
    assert window.hit("a") == (True, 0, 40)
    clock.now += 10
    assert window.hit("a") == (False, 0, 30)  # frees up when the first hit leaves the window
    assert window.hit("b")[0] is True  # every key has its own window
    clock.now += 30  # the first hit is exactly one window old: out
    assert window.hit("a") == (True, 0, 10)
    assert window.hit("a") == (False, 0, 10)
    clock.now += 60
    assert window.hit("a") == (True, 2, 60)


def test_moving_window_is_not_a_fixed_window() -> None:
    """Hits at the end of one minute count against the start of the next (no burst of 2x)."""
    from leitstand.http.ratelimit import MovingWindow

    clock = FakeClock()
    window = MovingWindow(2, 60, clock)
    clock.now += 59
    assert [window.hit("a")[0] for _ in range(2)] == [True, True]
    clock.now += 2
    assert window.hit("a")[0] is False


def test_idle_keys_are_swept_without_a_thread() -> None:
    import threading

    from leitstand.http.ratelimit import MovingWindow

    clock = FakeClock()
    threads = threading.active_count()
    window = MovingWindow(5, 60, clock)
    for i in range(1000):
        window.hit(f"10.0.{i // 256}.{i % 256}")
    assert len(window) == 1000
    assert threading.active_count() == threads
    clock.now += 61
    window.hit("192.0.2.1")  # the next hit after a window sweeps the idle keys
    assert len(window) == 1
    clock.now += 0.5
    window.hit("192.0.2.2")  # no second sweep within a second; nothing lost either
    assert len(window) == 2
