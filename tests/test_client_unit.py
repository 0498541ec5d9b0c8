"""Client behaviour at unit level, through `httpx.MockTransport` (no sockets): settings from the
environment, which answers are retried and how often, delays, keys, exceptions, batching."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from leitstand.client import (
    AsyncClient,
    AuthError,
    Client,
    ClientConfig,
    ConfigurationError,
    IngestError,
    NetworkError,
    RateLimitedError,
    RejectedError,
    ServerError,
    TooLargeError,
)
from leitstand.client.batches import split_lines
from leitstand.client.protocol import SSEParser, StreamEnded
from leitstand.client.retry import RetryPolicy, parse_retry_after

ACCEPTED = {"status": "accepted", "accepted": 1, "domain": "aussen"}


class Script:
    """Answers requests with a scripted list of responses (or exceptions), then 202."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if self.steps:
            step = self.steps.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        return httpx.Response(202, json=ACCEPTED)

    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.requests]


def error(status: int, detail: str = "nope", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"detail": detail}, headers=headers)


def make(script: Script, sleeps: list[float] | None = None, **kwargs: object) -> Client:
    recorded = sleeps if sleeps is not None else []
    settings: dict[str, object] = {"url": "http://leitstand.test", "token": "t", **kwargs}
    return Client(transport=httpx.MockTransport(script), sleep=recorded.append,
                  **settings)  # type: ignore[arg-type]


# -- settings ---------------------------------------------------------------------------------
def test_environment_defaults() -> None:
    config = ClientConfig.resolve(env={"LEITSTAND_TOKEN": "secret"})
    assert config.url == "http://localhost:8788"
    assert config.token == "secret"
    assert (config.timeout, config.retries, config.backoff) == (5.0, 3, 0.5)
    assert (config.max_body, config.max_events) == (1_048_576, 10_000)


def test_environment_values_and_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"LEITSTAND_URL": "http://h:1", "LEITSTAND_TOKEN": "e", "LEITSTAND_TIMEOUT": "2.5",
           "LEITSTAND_RETRIES": "7", "LEITSTAND_BACKOFF": "0.1", "LEITSTAND_MAX_BODY": "5000",
           "LEITSTAND_MAX_EVENTS": "9"}
    config = ClientConfig.resolve(env=env)
    assert (config.url, config.token, config.timeout, config.retries, config.backoff,
            config.max_body, config.max_events) == ("http://h:1", "e", 2.5, 7, 0.1, 5000, 9)
    assert ClientConfig.resolve(env=env, token="arg", retries=0).retries == 0
    assert ClientConfig.resolve(env=env, token="arg").token == "arg"


def test_client_reads_the_environment_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEITSTAND_URL", "http://from-env.test:9")
    monkeypatch.setenv("LEITSTAND_TOKEN", "env-token")
    monkeypatch.setenv("LEITSTAND_TIMEOUT", "1.5")
    script = Script()
    with Client(transport=httpx.MockTransport(script)) as client:
        client.send("aussen", {"event": "x"})
    request = script.requests[0]
    assert str(request.url) == "http://from-env.test:9/v1/ingest?domain=aussen"
    assert request.headers["x-auth"] == "env-token"
    assert request.extensions["timeout"]["read"] == 1.5
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"event": "x"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "LEITSTAND_TOKEN is not set"),
        ({"LEITSTAND_TOKEN": "t", "LEITSTAND_RETRIES": "many"}, "LEITSTAND_RETRIES must be"),
        ({"LEITSTAND_TOKEN": "t", "LEITSTAND_TIMEOUT": "0"}, "timeout must be a positive"),
        ({"LEITSTAND_TOKEN": "t", "LEITSTAND_TIMEOUT": "nan"}, "must be finite"),
        ({"LEITSTAND_TOKEN": "t", "LEITSTAND_URL": "localhost:8788"}, "must start with http"),
    ],
)
def test_invalid_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ClientConfig.resolve(env=env)


# -- retries ----------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_with_one_key(status: int) -> None:
    script = Script(error(status), error(status))
    sleeps: list[float] = []
    with make(script, sleeps) as client:
        receipt = client.send("aussen", {"n": 1})
    assert receipt.attempts == 3
    assert len(script.requests) == 3 and len(sleeps) == 2
    keys = script.keys()
    assert keys[0] and keys == [keys[0]] * 3 == [receipt.idempotency_key] * 3
    assert len({r.content for r in script.requests}) == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, RejectedError), (401, AuthError), (403, AuthError), (404, RejectedError),
     (409, RejectedError), (413, TooLargeError), (415, RejectedError), (422, RejectedError),
     (507, ServerError)],
)
def test_other_statuses_are_not_retried(status: int, kind: type[IngestError]) -> None:
    script = Script(error(status, f"reason {status}"))
    sleeps: list[float] = []
    with make(script, sleeps) as client, pytest.raises(kind) as caught:
        client.send("aussen", {"n": 1})
    assert len(script.requests) == 1 and sleeps == []
    assert caught.value.status == status
    assert caught.value.detail == f"reason {status}"
    assert caught.value.attempts == 1


def test_retries_are_counted_and_then_give_up() -> None:
    script = Script(*[error(503, "lock timeout")] * 10)
    sleeps: list[float] = []
    with make(script, sleeps, retries=4) as client, pytest.raises(ServerError) as caught:
        client.send("aussen", {"n": 1})
    assert len(script.requests) == 5
    assert caught.value.status == 503 and caught.value.detail == "lock timeout"
    assert caught.value.attempts == 5
    assert len(set(script.keys())) == 1


def test_zero_retries_means_one_attempt() -> None:
    script = Script(error(503))
    with make(script, retries=0) as client, pytest.raises(ServerError):
        client.send("aussen", {"n": 1})
    assert len(script.requests) == 1


def test_rate_limited_after_retries() -> None:
    script = Script(*[error(429, "rate limit exceeded", **{"Retry-After": "1"})] * 4)
    sleeps: list[float] = []
    with make(script, sleeps) as client, pytest.raises(RateLimitedError) as caught:
        client.send("aussen", {"n": 1})
    assert sleeps == [1.0, 1.0, 1.0]
    assert caught.value.status == 429 and caught.value.detail == "rate limit exceeded"
    assert caught.value.retry_after == 1.0


def test_network_errors_and_timeouts_are_retried() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                    httpx.RemoteProtocolError("dropped"))
    sleeps: list[float] = []
    with make(script, sleeps) as client:
        assert client.send("aussen", {"n": 1}).attempts == 4
    assert len(set(script.keys())) == 1 and len(sleeps) == 3


def test_network_failure_after_retries_has_no_status() -> None:
    script = Script(*[httpx.ConnectError("connection refused")] * 4)
    with make(script) as client, pytest.raises(NetworkError) as caught:
        client.send("aussen", {"n": 1})
    assert caught.value.status is None
    assert "connection refused" in caught.value.detail
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_retry_after_seconds_is_honoured() -> None:
    script = Script(error(429, **{"Retry-After": "7"}), error(503, **{"Retry-After": "2"}))
    sleeps: list[float] = []
    with make(script, sleeps) as client:
        client.send("aussen", {"n": 1})
    assert sleeps == [7.0, 2.0]


def test_retry_after_http_date_is_honoured() -> None:
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=30)
    script = Script(error(503, **{"Retry-After": format_datetime(when, usegmt=True)}))
    sleeps: list[float] = []
    with make(script, sleeps) as client:
        client.send("aussen", {"n": 1})
    assert len(sleeps) == 1
    assert 28.0 <= sleeps[0] <= 30.0


def test_retry_after_longer_than_the_client_waits_gives_up_at_once() -> None:
    script = Script(error(429, **{"Retry-After": "3600"}))
    with make(script) as client, pytest.raises(RateLimitedError) as caught:
        client.send("aussen", {"n": 1})
    assert len(script.requests) == 1
    assert caught.value.retry_after == 3600.0


def test_backoff_is_exponential_jittered_and_capped() -> None:
    low = RetryPolicy(retries=9, backoff=0.5, max_backoff=4.0, max_retry_after=60, rand=lambda: 0)
    high = RetryPolicy(retries=9, backoff=0.5, max_backoff=4.0, max_retry_after=60,
                       rand=lambda: 0.999999)
    assert [low.backoff_delay(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [round(high.backoff_delay(n), 3) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_delays_used_by_the_client() -> None:
    script = Script(error(503), error(503), error(503))
    sleeps: list[float] = []
    with make(script, sleeps, backoff=0.5) as client:
        client.send("aussen", {"n": 1})
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0 and 1.0 <= sleeps[2] <= 2.0


def test_parse_retry_after_forms() -> None:
    now = time.time()
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0  # in the past
    future = format_datetime(datetime.fromtimestamp(now + 100, timezone.utc), usegmt=True)
    assert 98.0 <= (parse_retry_after(future, now) or 0) <= 100.0


def test_each_logical_send_has_its_own_key_unless_given() -> None:
    script = Script()
    with make(script) as client:
        client.send("aussen", {"n": 1})
        client.send("aussen", {"n": 1})
        client.send("aussen", {"n": 1}, idempotency_key="mine-1")
    keys = script.keys()
    assert keys[0] != keys[1] and keys[2] == "mine-1"


# -- answers and exceptions -------------------------------------------------------------------
def test_any_2xx_is_success_and_replay_is_reported() -> None:
    script = Script(httpx.Response(200, text="ok"),
                    httpx.Response(202, json=ACCEPTED, headers={"Idempotent-Replayed": "true"}))
    with make(script) as client:
        first = client.send("aussen", {"n": 1})
        second = client.send("aussen", {"n": 1})
    assert (first.status, first.replayed) == (200, False)
    assert (second.status, second.accepted, second.replayed) == (202, 1, True)


def test_detail_falls_back_to_the_body_text() -> None:
    script = Script(httpx.Response(400, text="plain failure"))
    with make(script) as client, pytest.raises(RejectedError) as caught:
        client.send("aussen", {"n": 1})
    assert caught.value.detail == "plain failure"
    assert "HTTP 400" in str(caught.value) and "plain failure" in str(caught.value)


@pytest.mark.parametrize("event", [{"x": float("nan")}, ["not", "an", "object"], {"x": {1, 2}}])
def test_events_json_cannot_carry_are_refused_before_sending(event: object) -> None:
    script = Script()
    with make(script) as client, pytest.raises(RejectedError) as caught:
        client.send("aussen", event)
    assert script.requests == [] and caught.value.status is None


# -- batching ---------------------------------------------------------------------------------
def test_send_many_splits_under_the_body_limit() -> None:
    script = Script()
    events = [{"n": i, "pad": "x" * 50} for i in range(1000)]
    with make(script, max_body=4096) as client:
        summary = client.send_many("aussen", events)
    bodies = [r.content for r in script.requests]
    assert all(len(body) <= 4096 for body in bodies)
    assert all(r.headers["content-type"] == "application/x-ndjson" for r in script.requests)
    assert summary.events == 1000 and summary.batches == len(bodies) > 1
    received = [json.loads(line) for body in bodies for line in body.splitlines()]
    assert received == events
    assert len(set(script.keys())) == len(bodies)


def test_send_many_splits_under_the_event_limit() -> None:
    script = Script()
    with make(script) as client:  # the server's default: 10,000 events per request
        summary = client.send_many("aussen", ({"n": i} for i in range(25_000)))
    counts = [len(r.content.splitlines()) for r in script.requests]
    assert counts == [10_000, 10_000, 5_000] and summary.events == 25_000


def test_send_many_failure_reports_what_was_stored() -> None:
    script = Script(httpx.Response(202, json=ACCEPTED), error(400, "line 2: invalid JSON"))
    with make(script, max_events=10) as client, pytest.raises(RejectedError) as caught:
        client.send_many("aussen", [{"n": i} for i in range(30)])
    assert caught.value.accepted == 10 and len(script.requests) == 2
    assert (caught.value.batch.first_line, caught.value.batch.events) == (11, 10)


def test_batches_are_deterministic_with_offsets_and_line_numbers() -> None:
    lines = [b'{"a":1}\n', b"\n", b'{"b":22}\n', b'{"c":333}\n', b'{"d":4}']
    first = list(split_lines(lines, max_body=20, max_events=10))
    again = list(split_lines(iter(lines), max_body=20, max_events=10))
    assert first == again
    assert [(b.offset, b.first_line, b.events) for b in first] == [(0, 1, 2), (18, 4, 2)]
    assert first[0].body == b'{"a":1}\n{"b":22}\n'
    assert first[1].body == b'{"c":333}\n{"d":4}\n'


def test_a_line_over_the_body_limit_is_refused() -> None:
    with pytest.raises(TooLargeError, match="line 2"):
        list(split_lines([b"{}\n", b'{"x":"' + b"y" * 100 + b'"}\n'], max_body=50,
                         max_events=5))


# -- the async client -------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_client_retries_with_one_key_and_honours_retry_after() -> None:
    script = Script(error(503, **{"Retry-After": "3"}), httpx.ConnectError("refused"))
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with AsyncClient("http://leitstand.test", "t", transport=httpx.MockTransport(script),
                           sleep=sleep) as client:
        receipt = await client.send("aussen", {"n": 1})
        with pytest.raises(AuthError):
            script.steps = [error(401, "invalid X-Auth token")]
            await client.send("aussen", {"n": 2})
    assert receipt.attempts == 3 and sleeps[0] == 3.0 and len(sleeps) == 2
    assert len(set(script.keys()[:3])) == 1


# -- server-sent events -----------------------------------------------------------------------
def test_sse_parser() -> None:
    parser = SSEParser()
    lines = [": hello", "id: c1", 'data: {"a":1}', "", "retry: 5", "", "id: c2", "data: x",
             "data: y", ""]
    assert list(parser.events(lines)) == [("c1", '{"a":1}'), ("c2", "x\ny")]
    other = ["event: ping", "data: 1", "", "id: c3", "data: z", ""]
    assert list(parser.events(other)) == [("c3", "z")]
    with pytest.raises(StreamEnded, match="too slow"):
        list(parser.events(["event: disconnect", 'data: {"reason": "too slow"}', ""]))




@pytest.mark.anyio
async def test_async_send_many_streams_an_async_iterable_in_batches() -> None:
    script = Script()

    async def events() -> AsyncIterator[dict[str, int]]:
        for i in range(25):
            yield {"n": i}

    async with AsyncClient("http://leitstand.test", "t", transport=httpx.MockTransport(script),
                           max_events=10) as client:
        summary = await client.send_many("aussen", events())
    assert [len(r.content.splitlines()) for r in script.requests] == [10, 10, 5]
    assert summary.events == 25 and len(set(script.keys())) == 3


def test_follow_reconnects_after_the_last_cursor_and_gives_up_after_retries() -> None:
    streams = [
        httpx.Response(200, text="id: c1\ndata: a\n\nid: c2\ndata: b\n\n"),
        httpx.ConnectError("refused"),
        httpx.Response(200, text="id: c3\ndata: c\n\nevent: disconnect\ndata: bye\n\n"),
        error(503), error(503),
    ]
    script = Script(*streams)
    sleeps: list[float] = []
    with make(script, sleeps, retries=2) as client, pytest.raises(ServerError) as caught:
        seen = []
        for item in client.follow("aussen", cursor="c0"):
            seen.append(item)
    assert seen == [("c1", b"a\n"), ("c2", b"b\n"), ("c3", b"c\n")]
    resumed = [r.headers.get("last-event-id") for r in script.requests]
    # an event resets the count: the stream, the refusal, then the disconnect and two 503s
    assert resumed == ["c0", "c2", "c2", "c3", "c3"]
    assert caught.value.status == 503 and caught.value.attempts == 3 and len(sleeps) == 4
