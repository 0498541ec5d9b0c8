"""The client's spool without a server process: httpx.MockTransport plays the server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from leitstand.client import (
    AsyncClient,
    AuthError,
    Client,
    RejectedError,
    Spool,
    SpoolFullError,
)
from leitstand.client.config import ClientConfig


class Server:
    """Answers with `status` (202 stores the body); records every request."""

    def __init__(self, status: int = 202) -> None:
        self.status = status
        self.stored: list[bytes] = []
        self.keys: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.keys.append(request.headers.get("idempotency-key"))
        if self.status == 0:
            raise httpx.ConnectError("refused")
        if self.status == 202:
            self.stored.append(body)
            return httpx.Response(202, json={"status": "accepted", "accepted": 1,
                                             "domain": "aussen"})
        return httpx.Response(self.status, json={"detail": f"status {self.status}"})


def client(server: Server, spool: Path, **settings: object) -> Client:
    config = ClientConfig.resolve(url="http://leitstand.test", token="t", retries=1,
                                  backoff=0.001, spool_dir=str(spool), **settings)
    return Client(config=config, transport=httpx.MockTransport(server), sleep=lambda s: None)


def events_of(bodies: list[bytes]) -> list[int]:
    return [json.loads(line)["n"] for body in bodies for line in body.splitlines()]


@pytest.mark.parametrize("status", [0, 429, 500, 503, 408])
def test_undeliverable_batches_are_spooled_with_their_key_and_sent_later_in_order(
    tmp_path: Path, status: int
) -> None:
    server = Server(status)
    with client(server, tmp_path / "spool") as producer:
        first = producer.send("aussen", {"n": 0}, idempotency_key="key-0")
        summary = producer.send_many("aussen", [{"n": i} for i in range(1, 6)])
        assert first.spooled and first.idempotency_key == "key-0" and first.status == 0
        assert (summary.events, summary.spooled_events, summary.spooled_batches) == (0, 5, 1)
        assert server.stored == []
    status_now = Spool(tmp_path / "spool", 10**6).status()
    assert status_now.entries == 2 and status_now.last_error is not None
    server.status = 202
    with client(server, tmp_path / "spool") as producer:
        later = producer.send("aussen", {"n": 6})  # drains the spool first: order is kept
    assert not later.spooled
    assert events_of(server.stored) == list(range(7))
    # the two attempts, the failed drain before send_many, the drain that got through
    assert server.keys[:4] == ["key-0"] * 4
    assert Spool(tmp_path / "spool", 10**6).status().entries == 0


@pytest.mark.parametrize(("status", "kind"), [(400, RejectedError), (401, AuthError),
                                              (403, AuthError), (413, RejectedError),
                                              (422, RejectedError)])
def test_errors_retrying_cannot_fix_raise_at_once_and_are_never_spooled(
    tmp_path: Path, status: int, kind: type[Exception]
) -> None:
    server = Server(status)
    with client(server, tmp_path / "spool") as producer, pytest.raises(kind):
        producer.send("aussen", {"n": 0})
    assert len(server.keys) == 1
    assert Spool(tmp_path / "spool", 10**6).status().entries == 0


def test_a_full_spool_raises_and_keeps_what_it_has(tmp_path: Path) -> None:
    server = Server(503)
    spooled = []
    with client(server, tmp_path / "spool", spool_max_bytes=1000) as producer:
        with pytest.raises(SpoolFullError, match="LEITSTAND_SPOOL_MAX_BYTES=1000") as full:
            for i in range(100):
                spooled.append(producer.send("aussen", {"n": i, "pad": "x" * 100}))
        assert full.value.detail.endswith("was neither stored nor spooled")
        assert 2 <= len(spooled) < 10 and all(receipt.spooled for receipt in spooled)
        assert Spool(tmp_path / "spool", 1000).status().bytes <= 1000
        server.status = 202
        assert producer.flush_spool().events == len(spooled)
    assert events_of(server.stored) == list(range(len(spooled)))


def test_a_refused_spooled_batch_moves_to_rejected_and_the_rest_is_sent(tmp_path: Path) -> None:
    server = Server(503)
    with client(server, tmp_path / "spool") as producer:
        for i in range(3):
            producer.send("aussen", {"n": i})
    answers = iter([202, 422, 202])

    def refuse_the_second(request: httpx.Request) -> httpx.Response:
        server.status = next(answers)
        return server(request)

    with Client(config=ClientConfig.resolve(url="http://leitstand.test", token="t",
                                            spool_dir=str(tmp_path / "spool")),
                transport=httpx.MockTransport(refuse_the_second)) as flusher:
        drain = flusher.flush_spool()
    assert (drain.batches, drain.events, drain.rejected, drain.error) == (2, 2, 1, None)
    status = Spool(tmp_path / "spool", 10**6).status()
    assert (status.entries, status.rejected) == (0, 1)
    assert "refused" in status.last_error["error"]  # type: ignore[index]
    assert events_of(server.stored) == [0, 2]


def test_a_crash_while_writing_leaves_no_entry_and_a_torn_counter_heals(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10**6)
    (spool.path / "tmp" / "torn.batch").write_bytes(b'{"domain":')  # a writer died here
    spool.append("aussen", "k", "application/json", 1, b'{"n":1}')
    (spool.path / "bytes").write_text("999999")  # a drain died between unlink and count
    assert spool.recount() == (spool.queue / spool.names()[0]).stat().st_size
    assert [e.key for e in map(spool.read, spool.names()) if e] == ["k"]


def test_settings_are_validated_with_the_variable_named(tmp_path: Path) -> None:
    from leitstand.client import ConfigurationError

    base = {"LEITSTAND_TOKEN": "t"}
    with pytest.raises(ConfigurationError, match="LEITSTAND_SPOOL_MAX_BYTES"):
        ClientConfig.resolve(env={**base, "LEITSTAND_SPOOL_MAX_BYTES": "0"})
    with pytest.raises(ConfigurationError, match="LEITSTAND_CA_FILE"):
        ClientConfig.resolve(env={**base, "LEITSTAND_CA_FILE": str(tmp_path / "none.pem")})
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match="LEITSTAND_SPOOL_DIR"):
        Client(config=ClientConfig.resolve(env={**base, "LEITSTAND_SPOOL_DIR":
                                                str(tmp_path / "file" / "spool")}))
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="LEITSTAND_CA_FILE"):
        Client(config=ClientConfig.resolve(env={**base, "LEITSTAND_CA_FILE":
                                                str(tmp_path / "bad.pem")}))
    assert os.path.exists(tmp_path / "file")


@pytest.mark.anyio
async def test_the_async_client_spools_and_drains_in_the_background(tmp_path: Path) -> None:
    server = Server(0)
    config = ClientConfig.resolve(url="http://leitstand.test", token="t", retries=0,
                                  backoff=0.01, max_backoff=0.05, spool_dir=str(tmp_path / "s"))
    async with AsyncClient(config=config, transport=httpx.MockTransport(server)) as producer:
        receipts = [await producer.send("aussen", {"n": i}) for i in range(5)]
        assert all(r.spooled for r in receipts)
        server.status = 202
        import anyio

        with anyio.fail_after(30):
            while Spool(tmp_path / "s", 10**6).status().entries:
                await anyio.sleep(0.02)
    assert events_of(server.stored) == list(range(5))


def test_the_hauski_helper_says_spooled_and_the_next_call_sends_it_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.hauski_ingest import ingest_event

    monkeypatch.setenv("LEITSTAND_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("LEITSTAND_TOKEN", "t")
    server = Server(503)
    settings = {"url": "http://leitstand.test", "retries": 0,
                "transport": httpx.MockTransport(server)}
    assert ingest_event("aussen", {"n": 0}, **settings) == "spooled"  # type: ignore[arg-type]
    server.status = 202
    assert ingest_event("aussen", {"n": 1}, **settings) == "ok"  # type: ignore[arg-type]
    assert events_of(server.stored) == [0, 1]
