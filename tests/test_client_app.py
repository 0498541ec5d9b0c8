"""The client against the real service: the app in-process (ASGITransport) and the real server
process (`uvicorn app:app`). What the server stores is read back from its JSONL files."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from leitstand.app import create_app
from leitstand.client import (
    AsyncClient,
    AuthError,
    Client,
    ClientConfig,
    NetworkError,
    RateLimitedError,
    RejectedError,
    TooLargeError,
)
from leitstand.config import Settings
from testing import ServerProcess

from .conftest import TOKEN


def stored(data_dir: Path, domain: str) -> list[dict[str, Any]]:
    path = data_dir / f"{domain}.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Forwards to the real app, but the first answer never reaches the client (as when the
    connection breaks after the server stored the events)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("idempotency-key"))
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if len(self.keys) == 1:
            raise httpx.ReadError("connection reset after the server answered")
        return response


def app_client(client: httpx.AsyncClient, **kwargs: Any) -> AsyncClient:
    """A leitstand AsyncClient on the in-process app behind `client` (make_client's app)."""
    app = client.app  # type: ignore[attr-defined]
    settings: dict[str, Any] = {"url": "http://test", "token": TOKEN, "backoff": 0.01, **kwargs}
    return AsyncClient(transport=httpx.ASGITransport(app=app), **settings)


# -- in-process -------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_send_and_send_many_in_process(
    make_client: Callable[..., httpx.AsyncClient], data_dir: Path
) -> None:
    async with app_client(make_client()) as client:
        receipt = await client.send("Aussen", {"event": "demo"})
        summary = await client.send_many("aussen", ({"n": i} for i in range(25_000)))
    assert (receipt.status, receipt.accepted, receipt.domain, receipt.replayed) == (
        202, 1, "aussen", False)
    # the server's default limit is 10,000 events per request: three requests
    assert (summary.events, summary.batches, summary.replayed_batches) == (25_000, 3, 0)
    lines = stored(data_dir, "aussen")
    assert lines[0] == {"event": "demo", "domain": "aussen"}
    assert [line["n"] for line in lines[1:]] == list(range(25_000))


@pytest.mark.anyio
async def test_batches_fit_a_lowered_server_body_limit(
    make_client: Callable[..., httpx.AsyncClient], data_dir: Path
) -> None:
    events = [{"n": i, "text": "ü" * 40} for i in range(3_000)]
    async with app_client(make_client(max_body=20_000), max_body=20_000) as client:
        summary = await client.send_many("aussen", events)
    assert summary.batches > 10
    assert [line["n"] for line in stored(data_dir, "aussen")] == list(range(3_000))


@pytest.mark.anyio
async def test_a_lost_answer_is_retried_and_stored_once(
    make_client: Callable[..., httpx.AsyncClient], data_dir: Path
) -> None:
    app = make_client().app  # type: ignore[attr-defined]
    lossy = LoseFirstAnswer(httpx.ASGITransport(app=app))
    async with AsyncClient("http://test", TOKEN, backoff=0.01, transport=lossy) as client:
        receipt = await client.send("aussen", {"event": "once"})
    assert receipt.attempts == 2 and receipt.replayed
    assert lossy.keys == [receipt.idempotency_key] * 2
    assert stored(data_dir, "aussen") == [{"event": "once", "domain": "aussen"}]


@pytest.mark.anyio
async def test_server_errors_reach_the_caller_with_status_and_detail(
    make_client: Callable[..., httpx.AsyncClient], data_dir: Path
) -> None:
    http = make_client(max_body=1_000)
    async with app_client(http, token="wrong") as client:
        with pytest.raises(AuthError) as auth:
            await client.send("aussen", {"event": "x"})
    async with app_client(http, max_body=5_000) as client:
        with pytest.raises(RejectedError) as rejected:
            await client.send("aussen", {"event": "x", "domain": "innen"})
        with pytest.raises(TooLargeError) as too_large:
            await client.send_many("aussen", [{"pad": "x" * 100}] * 20)
    assert (auth.value.status, auth.value.detail, auth.value.attempts) == (
        401, "invalid X-Auth token", 1)
    assert rejected.value.status == 400 and "domain" in rejected.value.detail
    assert too_large.value.status == 413 and "1000 bytes" in too_large.value.detail
    assert too_large.value.attempts == 1 and too_large.value.accepted == 0
    assert stored(data_dir, "aussen") == []


@pytest.mark.anyio
async def test_rate_limit_of_the_real_app_is_waited_out(
    make_client: Callable[..., httpx.AsyncClient], data_dir: Path
) -> None:
    http = make_client(rate_limit="2/2second")
    async with app_client(http) as client:
        receipts = [await client.send("aussen", {"n": i}) for i in range(4)]
    assert sum(r.attempts for r in receipts) > 4  # some answers were 429 + Retry-After
    assert [line["n"] for line in stored(data_dir, "aussen")] == [0, 1, 2, 3]
    async with app_client(http, retries=0) as client:
        for _ in range(3):
            try:
                await client.send("aussen", {"n": "x"})
            except RateLimitedError as exc:
                assert exc.status == 429 and exc.retry_after is not None
                assert exc.detail == "rate limit exceeded"
                break
        else:
            pytest.fail("never rate limited")


def test_sync_client_drives_the_async_app_transport(
    make_settings: Callable[..., Settings], data_dir: Path
) -> None:
    app = create_app(make_settings())
    try:
        with Client("http://test", TOKEN, transport=httpx.ASGITransport(app=app)) as client:
            client.send("aussen", {"n": 0})
            summary = client.send_many("aussen", [{"n": 1}, {"n": 2}])
            assert summary.events == 2
        assert [line["n"] for line in stored(data_dir, "aussen")] == [0, 1, 2]
    finally:
        asyncio.run(app.state.service.store.close())


def test_sync_client_works_inside_a_running_event_loop(
    make_settings: Callable[..., Settings], data_dir: Path
) -> None:
    app = create_app(make_settings())

    async def caller() -> None:
        # a sync call from async code (blocking, but it must not deadlock or crash)
        with Client("http://test", TOKEN, transport=httpx.ASGITransport(app=app)) as client:
            client.send("aussen", {"n": 0})

    try:
        asyncio.run(caller())
        assert stored(data_dir, "aussen") == [{"n": 0, "domain": "aussen"}]
    finally:
        asyncio.run(app.state.service.store.close())


# -- the real server process ------------------------------------------------------------------
def test_against_the_real_server(server: ServerProcess) -> None:
    with Client(server.url, TOKEN) as client:
        receipt = client.send("aussen", {"event": "demo"}, idempotency_key="k-1")
        again = client.send("aussen", {"event": "demo"}, idempotency_key="k-1")
        summary = client.send_many("aussen", ({"n": i} for i in range(12_000)))
    assert receipt.status == 202 and not receipt.replayed
    assert again.replayed  # same key and body: stored once
    assert summary.batches == 2
    lines = stored(server.data_dir, "aussen")
    assert lines[0] == {"event": "demo", "domain": "aussen"}
    assert [line["n"] for line in lines[1:]] == list(range(12_000))


def test_real_server_errors_carry_status_and_detail(server: ServerProcess) -> None:
    with Client(server.url, "wrong-token") as client, pytest.raises(AuthError) as caught:
        client.send("aussen", {"event": "x"})
    assert caught.value.status == 401 and caught.value.detail == "invalid X-Auth token"
    with Client(server.url, TOKEN) as client, pytest.raises(RejectedError) as rejected:
        client.send("not a domain!", {"event": "x"})
    assert rejected.value.status == 400 and rejected.value.attempts == 1


def test_stopped_server_is_a_network_error_after_retries(server: ServerProcess) -> None:
    url = server.url
    server.stop()
    with Client(url, TOKEN, retries=2, backoff=0.01) as client, \
            pytest.raises(NetworkError) as caught:
        client.send("aussen", {"event": "x"})
    assert caught.value.status is None and caught.value.attempts == 3


def test_read_back_through_the_read_api(server: ServerProcess) -> None:
    with Client(server.url, TOKEN) as client:
        client.send_many("aussen", ({"n": i} for i in range(250)))
        page = client.events("aussen", tail=3)
        rest = client.events("aussen", cursor=page.cursor)
        first = client.events("aussen", limit=2)
        domains = client.domains()
        followed = []
        stream = client.follow("aussen", cursor=first.cursor)
        for _, line in stream:
            followed.append(orjson.loads(line)["n"])
            if len(followed) == 248:
                break
        stream.close()
    assert [orjson.loads(line)["n"] for line in page.lines] == [247, 248, 249]
    assert rest.lines == [] and rest.cursor
    assert [orjson.loads(line)["n"] for line in first.lines] == [0, 1]
    assert followed == list(range(2, 250))
    assert [d["domain"] for d in domains] == ["aussen"] and domains[0]["events"] == 250


def test_retries_reach_a_server_that_comes_back(tmp_path: Path) -> None:
    """Connection refused while the server is down; the retries get through once it is back."""
    server = ServerProcess(tmp_path / "data", token=TOKEN)
    outcome: dict[str, Any] = {}
    first_attempt = threading.Event()

    def sleep(seconds: float) -> None:
        first_attempt.set()
        time.sleep(min(seconds, 0.2))

    def send() -> None:
        try:
            with Client(server.url, TOKEN, retries=200, backoff=0.05, sleep=sleep) as client:
                outcome["receipt"] = client.send("aussen", {"event": "late"})
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        assert first_attempt.wait(timeout=30), "the client never failed a first attempt"
        server.start()
        sender.join(timeout=60)
    finally:
        server.stop()
    assert not sender.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["receipt"].attempts > 1
    assert stored(server.data_dir, "aussen") == [{"event": "late", "domain": "aussen"}]


@pytest.mark.anyio
async def test_async_read_back_and_follow(server: ServerProcess) -> None:
    async with AsyncClient(server.url, TOKEN) as client:
        await client.send_many("aussen", ({"n": i} for i in range(20)))
        first = await client.events("aussen", limit=2)
        followed = []
        stream = client.follow("aussen", cursor=first.cursor)
        async for _, line in stream:
            followed.append(orjson.loads(line)["n"])
            if len(followed) == 18:
                break
        await stream.aclose()
        domains = await client.domains()
    assert followed == list(range(2, 20))
    assert domains[0]["events"] == 20


def test_the_hauski_helper_keeps_a_bounded_set_of_clients(server: ServerProcess) -> None:
    from tools import hauski_ingest

    pool = hauski_ingest._Clients(2)
    configs = [ClientConfig.resolve(url=server.url, token=TOKEN, timeout=1.0 + i)
               for i in range(4)]
    clients = [pool.get(config) for config in configs]
    for client in clients:
        if not client._http.is_closed:
            client.send("aussen", {"event": "x"})
    assert len(pool) == 2 and pool.get(configs[3]) is clients[3]
    assert [c._http.is_closed for c in clients] == [True, True, False, False]
    pool.close()
    assert len(pool) == 0 and clients[3]._http.is_closed
