"""Access log, in-process: one line per request with a request id, never the token, no line
splitting or forging through control characters; LOG_LEVEL honoured."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from leitstand.http.accesslog import request_id_from
from leitstand.logs import _UNSAFE, _escape, clean

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

LINE = re.compile(
    r"request_id=(?P<id>\S+) client=(?P<client>\S+) token=(?P<token>\S+) "
    r"method=(?P<method>\S+) "
    r"path=(?P<path>\S+) status=(?P<status>\d{3}) duration_ms=(?P<ms>\d+\.\d)"
)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    handler = Lines()
    logger = logging.getLogger("leitstand.access")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def parse(line: str) -> dict[str, str]:
    match = LINE.fullmatch(line)
    assert match, line
    return match.groupdict()


async def test_one_line_per_request_with_all_fields(client, access_lines) -> None:
    await client.post("/v1/ingest?domain=aussen&x=1", json={})
    await client.get("/health")
    await client.get("/nope")
    fields = [parse(line) for line in access_lines]
    assert [(f["method"], f["path"], f["status"]) for f in fields] == [
        ("POST", "/v1/ingest", "202"), ("GET", "/health", "200"), ("GET", "/nope", "404")]
    assert all(re.fullmatch(r"[0-9a-f]{32}", f["id"]) for f in fields)
    assert len({f["id"] for f in fields}) == 3
    assert all(f["client"] == "127.0.0.1" for f in fields)
    assert [f["token"] for f in fields] == ["default", "-", "-"]  # the name, never the secret


async def test_sane_request_id_is_kept_and_echoed(client, access_lines) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc-123.X:y_z"})
    assert response.headers["X-Request-ID"] == "abc-123.X:y_z"
    assert parse(access_lines[-1])["id"] == "abc-123.X:y_z"


@pytest.mark.parametrize(
    "raw",
    [b"abc\r\nrequest_id=forged status=200", b"id with spaces", b"\x1b[31mred", b"x" * 129,
     "äöü".encode(), b"\xff\xfe", b""],
)
async def test_unsafe_request_id_is_replaced(client, access_lines, raw) -> None:
    request = client.build_request("GET", "/health")
    request.headers = httpx.Headers([(b"x-request-id", raw)])
    response = await client.send(request)
    echoed = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    assert parse(access_lines[-1])["id"] == echoed


async def test_error_answers_carry_the_request_id(client, access_lines) -> None:
    response = await client.post("/v1/ingest", json={}, headers={"X-Request-ID": "req-1"})
    assert response.status_code == 400
    assert response.headers["X-Request-ID"] == "req-1"
    assert parse(access_lines[-1])["status"] == "400"


@pytest.mark.parametrize(
    "path",
    [
        "/ingest/a%0D%0Arequest_id=forged%20status=200",
        "/ingest/%1B%5B2J%1B%5B31mred",
        "/ingest/%E2%80%A8line-separator%C2%85nel",
        "/ingest/tab%09and%00nul",
    ],
)
async def test_control_characters_in_path_cannot_split_or_forge(client, access_lines,
                                                                path) -> None:
    await client.post(path, json={})
    assert len(access_lines) == 1
    line = access_lines[0]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert all(0x20 <= ord(c) < 0x7F for c in line), line
    fields = parse(line)  # still exactly one well-formed line
    assert fields["status"] == "400"


def test_clean_escapes_everything_but_visible_ascii() -> None:
    assert clean("a\r\nb\x1b[0m\u2028c d") == "a\\x0d\\x0ab\\x1b[0m\\u2028c\\x20d"
    assert clean("x" * 600).endswith("...") and len(clean("x" * 600)) == 515
    assert request_id_from(b"ok-1") == "ok-1"


@given(st.text() | st.text(st.characters(min_codepoint=0x1f, max_codepoint=0x80)))
@example("/v1/ingest")
@example("a b")
@example("\x7f")
@example("\xa0")
def test_clean_is_the_escaping_regex_with_a_shortcut(text: str) -> None:
    """`clean` returns visible ASCII unchanged without the regex: the same result."""
    cut = text if len(text) <= 512 else text[:512] + "..."
    assert clean(text) == _UNSAFE.sub(_escape, cut)


async def test_token_is_never_logged(client, access_lines, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post("/v1/ingest?domain=aussen", json={"n": 1})
    await client.post("/v1/ingest?domain=aussen", json={}, headers={"X-Auth": "guess-987"})
    await client.post("/ingest/aussen", content=b"{", headers={"Content-Type":
                                                              "application/json"})
    everything = "\n".join(access_lines) + caplog.text
    assert len(access_lines) == 3
    assert TOKEN not in everything and "guess-987" not in everything


async def test_log_level_warning_suppresses_access_lines(make_client, access_lines) -> None:
    client = make_client(log_level="WARNING")
    try:
        await client.post("/v1/ingest?domain=aussen", json={})
        await client.get("/health")
        assert access_lines == []
        assert logging.getLogger("leitstand.access").getEffectiveLevel() == logging.WARNING
    finally:
        logging.getLogger("leitstand").setLevel(logging.INFO)


async def test_log_level_info_writes_access_lines(make_client, access_lines) -> None:
    client = make_client(log_level="info")
    await client.get("/health")
    assert len(access_lines) == 1


def test_every_leitstand_log_line_is_safe() -> None:
    """Not only the access log: any leitstand logger escapes what a client could have sent."""
    import io

    from leitstand.logs import SafeFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("leitstand.test-safe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("bad path %s", "/x\r\nINFO leitstand.access request_id=forged\x1b[2J\u2028")
        try:
            raise ValueError("boom\nINFO leitstand.access request_id=forged-too")
        except ValueError:
            logger.exception("failed on %s", "/y\n")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == ("ERROR leitstand.test-safe bad path /x\\x0d\\x0aINFO leitstand.access "
                        "request_id=forged\\x1b[2J\\u2028")
    assert lines[1] == "ERROR leitstand.test-safe failed on /y\\x0a"
    assert all(line.startswith("    ") for line in lines[2:]), lines
    assert any("forged-too" in line for line in lines[2:])
    assert not any(line.startswith("INFO") for line in lines)


async def test_the_service_logs_through_the_safe_formatter(client) -> None:
    from leitstand.logs import LoopBatchingHandler, SafeFormatter

    # The service's own handler (pytest adds its capture handlers next to it).
    handlers = [h for h in logging.getLogger("leitstand").handlers
                if type(h) is LoopBatchingHandler]
    assert handlers and all(isinstance(h.formatter, SafeFormatter) for h in handlers)
