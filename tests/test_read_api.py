"""The read API in-process: domains, events with cursors, limits, errors, auth, rejections."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from .conftest import TOKEN

pytestmark = pytest.mark.anyio


async def ingest(client: httpx.AsyncClient, domain: str, *events: dict) -> None:
    response = await client.post(f"/v1/ingest?domain={domain}", json=list(events))
    assert response.status_code == 202, response.text


def ndjson(response: httpx.Response) -> list[dict]:
    return [orjson.loads(line) for line in response.content.splitlines()]


async def test_domains_lists_counts_bytes_and_last_event(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    assert (await client.get("/v1/domains")).json()["domains"] == []
    await ingest(client, "innen", {"n": 1})
    await ingest(client, "aussen", {"n": 1}, {"n": 2})
    response = await client.get("/v1/domains")
    assert response.status_code == 200
    domains = response.json()["domains"]
    assert [d["domain"] for d in domains] == ["aussen", "innen"]
    aussen = domains[0]
    assert aussen["file"] == "aussen.jsonl"
    assert aussen["events"] == 2
    assert aussen["bytes"] == (data_dir / "aussen.jsonl").stat().st_size
    assert aussen["last_event_at"].endswith("Z")
    assert aussen["disk_bytes"] == aussen["bytes"] and aussen["segments"] == 0
    assert aussen["oldest_event_at"].endswith("Z")  # the first line's time, without rotation too
    assert response.headers["X-RateLimit-Limit"]
    storage = response.json()["storage"]
    assert storage["free_bytes"] > 0 and storage["min_free_bytes"] == 64 * 1024**2


async def test_domains_counts_outside_appends_incrementally(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    await ingest(client, "aussen", {"n": 1})
    assert (await client.get("/v1/domains")).json()["domains"][0]["events"] == 1
    with open(data_dir / "aussen.jsonl", "ab") as f:  # an outside tool, and a torn tail
        f.write(b'not json at all\n{"n": 3}\n{"torn')
    info = (await client.get("/v1/domains")).json()["domains"][0]
    assert info["events"] == 3
    with open(data_dir / "aussen.jsonl", "ab") as f:
        f.write(b'": 1}\n')
    assert (await client.get("/v1/domains")).json()["domains"][0]["events"] == 4
    # A rotated file is counted anew, files that are no domain are left out.
    os.replace(data_dir / "aussen.jsonl", data_dir / "aussen.jsonl.1")
    (data_dir / "aussen.jsonl").write_bytes(b'{"n": 9}\n')
    (data_dir / "Not A Domain.jsonl").write_bytes(b"{}\n")
    domains = (await client.get("/v1/domains")).json()["domains"]
    assert [(d["domain"], d["events"]) for d in domains] == [("aussen", 1)]


async def test_events_pages_through_with_cursor(client: httpx.AsyncClient) -> None:
    await ingest(client, "aussen", *({"n": i} for i in range(25)))
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        params = {"domain": "aussen", "limit": "10", **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/events", params=params)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        cursor = response.headers["X-Next-Cursor"]
        page = [e["n"] for e in ndjson(response)]
        assert len(page) <= 10
        if not page:
            break
        seen += page
    assert seen == list(range(25))
    # At the end: an empty body and the same position, usable to poll for more.
    await ingest(client, "aussen", {"n": 25})
    response = await client.get("/v1/events", params={"domain": "aussen", "cursor": cursor})
    assert [e["n"] for e in ndjson(response)] == [25]


async def test_events_limit_default_and_cap(client: httpx.AsyncClient) -> None:
    lines = b"".join(b'{"n":%d}\n' % i for i in range(1500))
    response = await client.post("/v1/ingest?domain=viel", content=lines,
                                 headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 202
    assert len(ndjson(await client.get("/v1/events?domain=viel"))) == 100
    assert len(ndjson(await client.get("/v1/events?domain=viel&limit=5000"))) == 1000
    assert len(ndjson(await client.get("/v1/events?domain=viel&limit=1"))) == 1
    for bad in ("0", "-1", "x", "1.5"):
        response = await client.get(f"/v1/events?domain=viel&limit={bad}")
        assert response.status_code == 400, bad
        assert "limit" in response.json()["detail"]


async def test_tail_returns_the_last_events(client: httpx.AsyncClient) -> None:
    await ingest(client, "aussen", *({"n": i} for i in range(10)))
    response = await client.get("/v1/events?domain=aussen&tail=3")
    assert [e["n"] for e in ndjson(response)] == [7, 8, 9]
    await ingest(client, "aussen", {"n": 10})
    follow = await client.get("/v1/events", params={
        "domain": "aussen", "cursor": response.headers["X-Next-Cursor"]})
    assert [e["n"] for e in ndjson(follow)] == [10]
    assert len(ndjson(await client.get("/v1/events?domain=aussen&tail=50"))) == 11
    assert ndjson(await client.get("/v1/events?domain=aussen&tail=0")) == []
    both = await client.get("/v1/events", params={
        "domain": "aussen", "tail": "1", "cursor": response.headers["X-Next-Cursor"]})
    assert both.status_code == 400


async def test_never_a_partial_line_and_odd_content_passes(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    await ingest(client, "aussen", {"n": 1})
    with open(data_dir / "aussen.jsonl", "ab") as f:
        f.write(b"\xff\xfe not utf-8, not json\n\n{\"half\": ")
    response = await client.get("/v1/events?domain=aussen")
    assert response.status_code == 200
    assert response.content == b'{"n":1,"domain":"aussen"}\n\xff\xfe not utf-8, not json\n\n'
    cursor = response.headers["X-Next-Cursor"]
    with open(data_dir / "aussen.jsonl", "ab") as f:
        f.write(b'"now whole"}\n')
    rest = await client.get("/v1/events", params={"domain": "aussen", "cursor": cursor})
    assert rest.content == b'{"half": "now whole"}\n'
    tail = await client.get("/v1/events?domain=aussen&tail=1")
    assert tail.content == b'{"half": "now whole"}\n'


@pytest.mark.parametrize("cursor", [
    "nonsense", "", "AAAAAAAAAAAAAAAAAAAAAAA", "x" * 23, "Ä" * 23, "AQAAAAAAmEENAAAAAAAAAAg=",
])
async def test_bad_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    await ingest(client, "aussen", {"n": 1})
    response = await client.get("/v1/events", params={"domain": "aussen", "cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


async def test_cursor_inside_a_line_is_400(client: httpx.AsyncClient) -> None:
    from leitstand.store.cursors import decode_cursor, encode_cursor

    await ingest(client, "aussen", {"n": 1}, {"n": 2})
    first = await client.get("/v1/events?domain=aussen&limit=1")
    seq, inode, offset = astuple(decode_cursor(first.headers["X-Next-Cursor"]))
    for forged in (encode_cursor(seq, inode, offset - 1), encode_cursor(seq, inode, offset + 1)):
        response = await client.get("/v1/events", params={"domain": "aussen", "cursor": forged})
        assert response.status_code == 400


async def test_rotated_file_restarts_at_its_beginning(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    await ingest(client, "aussen", {"n": 1})
    cursor = (await client.get("/v1/events?domain=aussen")).headers["X-Next-Cursor"]
    os.replace(data_dir / "aussen.jsonl", data_dir / "aussen.jsonl.1")
    await ingest(client, "aussen", {"n": 2})
    response = await client.get("/v1/events", params={"domain": "aussen", "cursor": cursor})
    assert [e["n"] for e in ndjson(response)] == [2]


async def test_unknown_and_invalid_domain(client: httpx.AsyncClient, data_dir: Path) -> None:
    await ingest(client, "aussen", {"n": 1})
    for path in ("/v1/events?domain=nirgends", "/v1/stream?domain=nirgends"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "unknown domain 'nirgends'"}
    assert (await client.get("/v1/events?domain=-bad-")).status_code == 400
    assert (await client.get("/v1/events")).status_code == 400
    # A normalised name finds the domain; a planted symlink is never followed.
    assert (await client.get("/v1/events?domain=%20AUSSEN%20")).status_code == 200
    (data_dir / "link.jsonl").symlink_to(data_dir / "aussen.jsonl")
    assert (await client.get("/v1/events?domain=link")).status_code == 404
    # Neither a FIFO (opening it must not wait for a writer) nor a directory is a domain.
    os.mkfifo(data_dir / "rohr.jsonl")
    (data_dir / "ordner.jsonl").mkdir()
    with anyio.fail_after(10):
        assert (await client.get("/v1/events?domain=rohr")).status_code == 404
        assert (await client.get("/v1/events?domain=ordner")).status_code == 404
        domains = (await client.get("/v1/domains")).json()["domains"]
    assert [d["domain"] for d in domains] == ["aussen"]


@pytest.mark.parametrize("path", [
    "/v1/domains", "/v1/events?domain=aussen", "/v1/stream?domain=aussen",
    "/v1/rejections", "/v1/events?domain=aussen&limit=x",
])
async def test_auth_required(client: httpx.AsyncClient, path: str) -> None:
    await ingest(client, "aussen", {"n": 1})
    missing = await client.get(path, headers={"X-Auth": ""})
    wrong = await client.get(path, headers={"X-Auth": "wrong"})
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["detail"]
        assert "X-RateLimit-Limit" in response.headers


async def test_read_routes_share_their_own_rate_limit(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    """LEITSTAND_READ_RATE_LIMIT is one budget for all read routes, apart from ingest's."""
    client = make_client(rate_limit="2/minute", read_rate_limit="3/minute")
    await ingest(client, "aussen", {"n": 1})
    assert (await client.get("/v1/domains")).status_code == 200
    assert (await client.get("/v1/events?domain=aussen")).status_code == 200
    assert (await client.get("/v1/whoami")).status_code == 200
    limited = await client.get("/v1/rejections")
    assert limited.status_code == 429
    assert "Retry-After" in limited.headers
    assert limited.headers["X-RateLimit-Limit"] == "3"
    # Readers used up their budget; the producer on the same IP still has its own.
    assert (await client.post("/v1/ingest?domain=aussen", json={"n": 2})).status_code == 202


async def test_cursors_no_gaps_no_duplicates_under_concurrent_appends(
    client: httpx.AsyncClient,
) -> None:
    writers, per_writer = 4, 60

    async def write(writer: int) -> None:
        for i in range(per_writer):
            await ingest(client, "lauf", {"w": writer, "i": i}, {"w": writer, "i": i, "b": 1})

    async def read_until_done(expected: int, limit: int) -> list[tuple[int, int, int]]:
        got: list[tuple[int, int, int]] = []
        cursor = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(got) < expected:
            assert loop.time() < deadline, f"read {len(got)} of {expected}"
            params = {"domain": "lauf", "limit": str(limit)}
            if cursor:
                params["cursor"] = cursor
            response = await client.get("/v1/events", params=params)
            if response.status_code == 404:  # not created yet
                await asyncio.sleep(0.005)
                continue
            assert response.status_code == 200, response.text
            cursor = response.headers["X-Next-Cursor"]
            got += [(e["w"], e["i"], e.get("b", 0)) for e in ndjson(response)]
            await asyncio.sleep(0)
        return got

    expected = writers * per_writer * 2
    results = await asyncio.gather(
        *(write(w) for w in range(writers)),
        read_until_done(expected, 7), read_until_done(expected, 1000),
    )
    for got in results[writers:]:
        assert len(got) == expected
        assert len(set(got)) == expected  # no duplicates (and so, with the count, no gaps)
        for w in range(writers):  # each writer's events in the order it sent them
            mine = [(i, b) for ww, i, b in got if ww == w]
            assert mine == sorted(mine)
            assert mine == [(i, b) for i in range(per_writer) for b in (0, 1)]


async def test_rejections_record_and_metrics(client: httpx.AsyncClient) -> None:
    await client.post("/v1/ingest?domain=aussen", json={"n": 1}, headers={"X-Auth": "nope"})
    await client.post("/v1/ingest?domain=Garten", content=b"{broken",
                      headers={"Content-Type": "application/json"})
    await client.get("/v1/events?domain=nirgends")
    response = await client.get("/v1/rejections")
    assert response.status_code == 200
    items = response.json()["rejections"]
    assert [(r["status"], r["route"], r["domain"]) for r in items] == [
        (404, "/v1/events", "nirgends"),
        (400, "/v1/ingest", "garten"),
        (401, "/v1/ingest", "aussen"),
    ]
    assert items[2]["reason"] == "invalid X-Auth token"
    assert items[2]["client"] == "127.0.0.1"
    assert items[2]["time"].endswith("Z")
    assert set(items[0]) == {"time", "client", "route", "domain", "status", "reason", "token"}
    assert [r["token"] for r in items] == ["default", "default", None]  # once it was valid
    assert "nope" not in response.text and "broken" not in response.text
    assert len((await client.get("/v1/rejections?limit=1")).json()["rejections"]) == 1
    metrics = (await client.get("/metrics")).text
    assert 'leitstand_rejections_total{reason="unauthorized"} 1.0' in metrics
    assert 'leitstand_rejections_total{reason="not_found"} 1.0' in metrics


async def test_rejections_ring_keeps_the_last_n(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client(rejections_kept=3)
    for i in range(5):
        await client.get(f"/v1/events?domain=d{i}")
    items = (await client.get("/v1/rejections")).json()["rejections"]
    assert [r["domain"] for r in items] == ["d4", "d3", "d2"]
    assert TOKEN not in str(items)


async def test_read_routes_are_documented(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    expected = {
        "/v1/domains": {"200", "401", "403", "429"},
        "/v1/events": {"200", "400", "401", "403", "404", "410", "429"},
        "/v1/stream": {"200", "400", "401", "403", "404", "410", "429"},
        "/v1/rejections": {"200", "400", "401", "403", "429"},
        "/v1/whoami": {"200", "401", "403", "429"},
    }
    for path, statuses in expected.items():
        op = doc["paths"][path]["get"]
        assert set(op["responses"]) == statuses, path
        assert all(r["description"] for r in op["responses"].values())
        assert op["security"] == [{"XAuth": []}]
        assert "Retry-After" in op["responses"]["429"]["headers"]
    events = doc["paths"]["/v1/events"]["get"]
    assert "X-Next-Cursor" in events["responses"]["200"]["headers"]
    assert "application/x-ndjson" in events["responses"]["200"]["content"]
    assert "text/event-stream" in doc["paths"]["/v1/stream"]["get"]["responses"]["200"]["content"]
    assert "/" not in doc["paths"]


async def test_web_view_is_served_offline_and_locked_down(client: httpx.AsyncClient) -> None:
    page = await client.get("/", headers={"X-Auth": ""})  # the page itself needs no token
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = await client.get(f"/web/{name}", headers={"X-Auth": ""})
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
        assert "http://" not in asset.text and "https://" not in asset.text
    assert (await client.get("/web/../app.py")).status_code == 404
    assert (await client.get("/web/index.html.bak")).status_code == 404


def test_domain_stats_read_only_what_was_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leitstand.store import reader

    (tmp_path / "gross.jsonl").write_bytes((b'{"n": 1, "pad": "' + b"x" * 200 + b'"}\n') * 5000)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stats = reader.DomainStats(dir_fd)
        read: list[int] = []
        real_pread = os.pread

        def counting_pread(fd: int, size: int, offset: int) -> bytes:
            data = real_pread(fd, size, offset)
            read.append(len(data))
            return data

        monkeypatch.setattr(reader.os, "pread", counting_pread)
        assert stats.snapshot()[0].events == 5000
        assert sum(read) >= (tmp_path / "gross.jsonl").stat().st_size
        read.clear()
        assert stats.snapshot()[0].events == 5000
        assert sum(read) == 0  # nothing new: nothing read
        with open(tmp_path / "gross.jsonl", "ab") as f:
            f.write(b'{"n": 2}\n')
        assert stats.snapshot()[0].events == 5001
        assert sum(read) == len(b'{"n": 2}\n')
    finally:
        os.close(dir_fd)


async def test_lines_of_a_group_still_being_written_are_not_read(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    """A writer holds the flock while its group is unsettled (it may yet be cut back after a
    failed fsync): readers wait for it instead of handing out lines that may vanish."""
    import fcntl

    assert (await client.post("/v1/ingest?domain=settle", json={"n": 1})).status_code == 202
    path = data_dir / "settle.jsonl"
    before = path.stat().st_size
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b'{"n":"never acknowledged"}\n')
        read = asyncio.ensure_future(client.get("/v1/events?domain=settle"))
        await asyncio.sleep(0.3)
        assert not read.done(), "the read did not wait for the writer's group"
        os.ftruncate(fd, before)  # the group failed: cut back, as the store does
        fcntl.flock(fd, fcntl.LOCK_UN)
        response = await asyncio.wait_for(read, 10)
    finally:
        os.close(fd)
    assert response.status_code == 200
    assert [orjson.loads(line)["n"] for line in response.content.splitlines()] == [1]
