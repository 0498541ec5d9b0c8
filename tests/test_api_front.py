"""The lean ingest front (leitstand/http/front.py): ingest requests are served by the front
alone, and they get the same answers — status, body, headers — and leave the same access log
line, metrics and rejection records as when the same routes are served through FastAPI's
middleware stack and router (the way every request took before the front)."""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from leitstand.app import create_app
from leitstand.config import Settings
from leitstand.http.front import IngestFront

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

GARTEN = "garten-secret"
TOKENS = (f'[[token]]\nname = "garten-sensor"\n'
          f'sha256 = "{hashlib.sha256(GARTEN.encode()).hexdigest()}"\n'
          'write = ["garten.*"]\nread = []\n')


def front_of(app: Any) -> IngestFront:
    stack = app.build_middleware_stack()
    assert isinstance(stack, IngestFront), "the front is the outermost layer of the app"
    return stack


def through_fastapi(app: Any) -> Callable[[Scope, Receive, Send], Any]:
    """The app without its front: FastAPI's stack (ServerErrorMiddleware, the AccessLog
    middleware, ExceptionMiddleware, the router) serves the same routes."""
    stack = front_of(app).app

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        await stack(scope, receive, send)

    return asgi


def front_only(app: Any) -> Callable[[Scope, Receive, Send], Any]:
    """The app's front with nothing behind it: a request it passed on would fail."""
    front = front_of(app)

    async def nothing_behind(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"the front passed {scope['method']} {scope['path']} on")

    front.app = nothing_behind

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        await front(scope, receive, send)

    return asgi


# (name, method path, headers, body): one of each error an ingest request can get, and successes
CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("202", "/v1/ingest?domain=aussen", {}, b'{"n":1}'),
    ("202 ndjson gzip", "/v1/ingest?domain=aussen",
     {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
     gzip.compress(b'{"n":1}\n{"n":2}\n')),
    ("200 legacy", "/ingest/aussen", {}, b'{"n":1}'),
    ("202 replayed", "/v1/ingest?domain=aussen", {"Idempotency-Key": "k1"}, b'{"n":1}'),
    ("202 replayed again", "/v1/ingest?domain=aussen", {"Idempotency-Key": "k1"}, b'{"n":1}'),
    ("401 missing", "/v1/ingest?domain=aussen", {"X-Auth": ""}, b'{"n":1}'),
    ("401 wrong", "/v1/ingest?domain=aussen", {"X-Auth": "wrong"}, b'{"n":1}'),
    ("401 legacy", "/ingest/aussen", {"X-Auth": "wrong"}, b'{"n":1}'),
    ("403", "/v1/ingest?domain=aussen", {"X-Auth": GARTEN}, b'{"n":1}'),
    ("413", "/v1/ingest?domain=aussen", {}, b'{"n":"' + b"x" * 300 + b'"}'),
    ("415", "/v1/ingest?domain=aussen", {"Content-Type": "text/plain"}, b'{"n":1}'),
    ("415 encoding", "/ingest/aussen", {"Content-Encoding": "br"}, b'{"n":1}'),
    ("400 json", "/v1/ingest?domain=aussen", {}, b'{"n":'),
    ("400 domain", "/v1/ingest?domain=a%20b", {}, b'{"n":1}'),
    ("400 no domain", "/v1/ingest", {}, b'{"n":1}'),
    ("400 key", "/v1/ingest?domain=aussen", {"Idempotency-Key": "a\tb"}, b'{"n":1}'),
    ("400 gzip", "/v1/ingest?domain=aussen", {"Content-Encoding": "gzip"}, b"not gzip"),
    ("422 key reused", "/v1/ingest?domain=aussen", {"Idempotency-Key": "k1"}, b'{"n":2}'),
    ("429", "/v1/ingest?domain=aussen", {}, b'{"n":1}'),  # the 12th request: over the limit
    ("429 legacy", "/ingest/aussen", {}, b'{"n":1}'),
]
RATE_LIMIT = "18/hour"  # the cases up to "422 key reused" are admitted (400 domain included)


def normal_headers(response: httpx.Response) -> list[tuple[str, str]]:
    """The headers in order; the seconds until the window frees up depend on the clock."""
    return [(k, "<seconds>" if k in ("x-ratelimit-reset", "retry-after") else v)
            for k, v in response.headers.multi_items()]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(re.sub(r"duration_ms=\S+", "duration_ms=-", record.getMessage()))


async def run_cases(make_settings: Callable[..., Settings], data_dir: Path, tokens: Path,
                    wrap: Callable[[Any], Callable[[Scope, Receive, Send], Any]],
                    ) -> dict[str, Any]:
    """Every case against a fresh app served by `wrap(app)`; the answers and what they left."""
    app = create_app(make_settings(data_dir=data_dir, max_body=200, rate_limit=RATE_LIMIT,
                                   tokens_file=tokens))
    access_log = Lines()
    logging.getLogger("leitstand.access").addHandler(access_log)
    answers = []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wrap(app)),
                                     base_url="http://test") as http:
            for i, (name, path, headers, body) in enumerate(CASES):
                response = await http.post(path, content=body, headers={
                    "X-Auth": TOKEN, "Content-Type": "application/json",
                    "X-Request-ID": f"case-{i}", **headers})
                answers.append((name, response.status_code, response.content,
                                normal_headers(response)))
        svc = app.state.service
        metrics = svc.metrics.render().decode()
        rejections = [{**r.as_json(), "time": "-"} for r in svc.rejections.latest(100)]
    finally:
        logging.getLogger("leitstand.access").removeHandler(access_log)
        await app.state.service.store.close()
    counted = sorted(line for line in metrics.splitlines()
                     if line.startswith(("leitstand_requests_total", "leitstand_rejections_total",
                                         "leitstand_token_", "leitstand_events_total"))
                     and "_created" not in line)
    stored = sorted(p.name for p in data_dir.iterdir())
    data = {n: (data_dir / n).read_bytes() for n in stored if n.endswith(".jsonl")}
    return {"answers": answers, "log": access_log.lines, "metrics": counted,
            "rejections": rejections, "files": stored, "data": data}


async def test_the_front_answers_as_fastapi_does(make_settings, tmp_path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    front = await run_cases(make_settings, tmp_path / "front", tokens, front_only)
    fastapi = await run_cases(make_settings, tmp_path / "fastapi", tokens, through_fastapi)
    assert [a[:2] for a in front["answers"]] == [
        ("202", 202), ("202 ndjson gzip", 202), ("200 legacy", 200), ("202 replayed", 202),
        ("202 replayed again", 202), ("401 missing", 401), ("401 wrong", 401),
        ("401 legacy", 401), ("403", 403), ("413", 413), ("415", 415), ("415 encoding", 415),
        ("400 json", 400), ("400 domain", 400), ("400 no domain", 400), ("400 key", 400),
        ("400 gzip", 400), ("422 key reused", 422), ("429", 429), ("429 legacy", 429)]
    for ours, theirs in zip(front["answers"], fastapi["answers"], strict=True):
        assert ours == theirs
    by_name = {name: (body, dict(headers)) for name, _, body, headers in front["answers"]}
    assert by_name["202 replayed again"][1]["idempotent-replayed"] == "true"
    assert by_name["401 legacy"][1]["sunset"] and by_name["429 legacy"][1]["deprecation"]
    assert by_name["429"][1]["x-ratelimit-remaining"] == "0"
    assert by_name["403"][0] == (b'{"detail":"token \'garten-sensor\' may not write domain '
                                 b'\'aussen\'"}')
    assert by_name["415"][1]["x-request-id"] == "case-10"
    # what the answers left behind: the same, line for line
    for part in ("log", "metrics", "rejections", "files", "data"):
        assert front[part] == fastapi[part], part
    assert len(front["log"]) == len(CASES)
    assert front["log"][8] == ("request_id=case-8 client=127.0.0.1 token=garten-sensor "
                               "method=POST path=/v1/ingest status=403 duration_ms=-")
    assert 'leitstand_requests_total{route="/ingest/{domain}",status="401"} 1.0' in front[
        "metrics"]
    assert 'leitstand_rejections_total{reason="too_large"} 1.0' in front["metrics"]
    assert ('leitstand_token_rejections_total{reason="forbidden",token="garten-sensor"} 1.0'
            in front["metrics"])
    assert len(front["rejections"]) == len(CASES) - 5
    assert {"client": "127.0.0.1", "route": "/v1/ingest", "domain": "aussen", "status": 403,
            "token": "garten-sensor", "reason": "token 'garten-sensor' may not write domain "
            "'aussen'"}.items() <= front["rejections"][11].items()  # newest first


async def test_an_unexpected_error_is_a_500_with_the_request_id(make_settings,
                                                               tmp_path) -> None:
    """Both ways: a 500 in the one error shape, naming the request id, counted; the error is
    raised on to the server (which logs it and closes the connection)."""
    answers = []
    for name, wrap in (("front", front_only), ("fastapi", through_fastapi)):
        app = create_app(make_settings(data_dir=tmp_path / name))

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the disk caught fire")

        app.state.service.store.append = broken
        transport = httpx.ASGITransport(app=wrap(app), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.post("/v1/ingest?domain=aussen", json={"n": 1},
                                       headers={"X-Auth": TOKEN, "X-Request-ID": "boom-1"})
        metrics = app.state.service.metrics.render().decode()
        await app.state.service.store.close()
        answers.append((response.status_code, response.content, normal_headers(response)))
        assert 'leitstand_rejections_total{reason="internal"} 1.0' in metrics
        assert 'leitstand_requests_total{route="/v1/ingest",status="500"} 1.0' in metrics
    assert answers[0] == answers[1]
    assert answers[0][:2] == (500, b'{"detail":"internal error"}')
    assert dict(answers[0][2])["x-request-id"] == "boom-1"
    assert [k for k, _ in answers[0][2]].count("x-request-id") == 1


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/ingest"), ("POST", "/v1/ingest/"), ("POST", "/ingest/a/b"),
    ("POST", "/v1/ingestx"), ("GET", "/health"),
])
async def test_the_front_passes_everything_else_on(make_settings, method, path) -> None:
    app = create_app(make_settings())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front_only(app)),
                                     base_url="http://test") as http:
            with pytest.raises(AssertionError, match=r"passed .* on"):
                await http.request(method, path, headers={"X-Auth": TOKEN})
    finally:
        await app.state.service.store.close()


def test_a_real_server_serves_ingest_through_the_front(server) -> None:
    """`uvicorn app:app`: the answers, the access log lines with the request ids, the metrics
    and the rejection record."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ok = http.post("/v1/ingest?domain=aussen", json={"n": 1},
                       headers={"X-Auth": TOKEN, "X-Request-ID": "real-ok"})
        denied = http.post("/ingest/aussen", json={"n": 1},
                           headers={"X-Auth": "wrong", "X-Request-ID": "real-denied"})
        metrics = http.get("/metrics").text
        rejections = http.get("/v1/rejections", headers={"X-Auth": TOKEN}).json()
    assert (ok.status_code, ok.json()) == (202, {"status": "accepted", "accepted": 1,
                                                 "domain": "aussen"})
    assert ok.headers["x-request-id"] == "real-ok" and ok.headers["x-ratelimit-limit"]
    assert (denied.status_code, denied.json()) == (401, {"detail": "invalid X-Auth token"})
    assert denied.headers["deprecation"] and denied.headers["x-request-id"] == "real-denied"
    assert 'leitstand_requests_total{route="/v1/ingest",status="202"} 1.0' in metrics
    assert 'leitstand_requests_total{route="/ingest/{domain}",status="401"} 1.0' in metrics
    assert 'leitstand_rejections_total{reason="unauthorized"} 1.0' in metrics
    assert rejections["rejections"][0]["route"] == "/ingest/aussen"
    assert rejections["rejections"][0]["status"] == 401
    log = server.log()
    assert re.search(r"request_id=real-ok client=127\.0\.0\.1 token=default method=POST "
                     r"path=/v1/ingest status=202 duration_ms=", log), log
    assert re.search(r"request_id=real-denied client=127\.0\.0\.1 token=- method=POST "
                     r"path=/ingest/aussen status=401 duration_ms=", log), log


async def test_a_client_gone_before_the_body_is_complete(make_settings) -> None:
    """As with Starlette's `Request.stream`: the disconnect ends the read, the answer (which
    nobody reads) is a 400, counted and recorded; nothing is stored."""
    app = create_app(make_settings())
    messages = [{"type": "http.request", "body": b'{"n":', "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/ingest",
             "raw_path": b"/v1/ingest", "query_string": b"domain=aussen", "root_path": "",
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
             "headers": [(b"x-auth", TOKEN.encode()), (b"content-type", b"application/json")]}
    try:
        await app(scope, receive, send)
        svc = app.state.service
        rejection = svc.rejections.latest(1)[0]
        metrics = svc.metrics.render().decode()
    finally:
        await app.state.service.store.close()
    assert sent[0]["status"] == 400
    assert sent[1]["body"] == b'{"detail":"client disconnected before the body was complete"}'
    assert (rejection.status, rejection.route, rejection.token) == (400, "/v1/ingest", "default")
    assert 'leitstand_requests_total{route="/v1/ingest",status="400"} 1.0' in metrics
    assert not list(make_settings().data_dir.glob("*.jsonl"))


async def test_the_same_path_under_another_root_path_is_matched_anew(make_settings) -> None:
    """The front remembers the router's verdict per path and root path, never per path alone."""
    app = create_app(make_settings())
    asgi = front_only(app)
    try:
        for _ in range(2):
            transport = httpx.ASGITransport(app=asgi, root_path="/x")
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                served = await http.post("/x/v1/ingest?domain=aussen", json={"n": 1},
                                         headers={"X-Auth": TOKEN})
                assert served.status_code == 202
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                         base_url="http://test") as http:
                with pytest.raises(AssertionError, match=r"passed POST /x/v1/ingest on"):
                    await http.post("/x/v1/ingest?domain=aussen", json={"n": 1},
                                    headers={"X-Auth": TOKEN})
    finally:
        await app.state.service.store.close()
