"""leitstand.headertimeout subclasses uvicorn's httptools protocol: uvicorn has no public hook
for a request-head deadline, so the subclass relies on uvicorn internals (its parser callbacks
and a few instance attributes). uvicorn is pinned exactly; these tests drive the protocol
in-process and fail when those internals change, before the real-server tests in
test_hardening_server.py would show it as a hang."""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from leitstand.headertimeout import MAX_HEAD_BYTES, STATE_KEY, HeaderTimeoutProtocol

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent

# The parser callbacks and asyncio.Protocol methods the subclass overrides, with their
# parameters (besides self).
OVERRIDDEN = {
    "connection_made": ["transport"],
    "data_received": ["data"],
    "on_message_begin": [],
    "on_headers_complete": [],
    "on_body": ["body"],
    "on_message_complete": [],
    "connection_lost": ["exc"],
}


def test_uvicorn_is_the_pinned_version() -> None:
    """A new uvicorn must come with a new look at headertimeout.py (and this file)."""
    pinned = re.search(r"^uvicorn\[standard\]==(\S+)$",
                       (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned is not None
    assert uvicorn.__version__ == pinned.group(1)


@pytest.mark.parametrize(("name", "params"), sorted(OVERRIDDEN.items()))
def test_overridden_methods_exist_with_the_same_parameters(name: str, params: list) -> None:
    base = getattr(HttpToolsProtocol, name)
    assert list(inspect.signature(base).parameters)[1:] == params
    assert name in vars(HeaderTimeoutProtocol)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = asyncio.Event()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 40000), "sockname": ("127.0.0.1", 8788)}.get(
            name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def close(self) -> None:
        self.closed.set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def connect(timeout: float) -> tuple[HeaderTimeoutProtocol, FakeTransport]:
    config = Config(app=app, http=HeaderTimeoutProtocol, lifespan="off", log_level="warning")
    protocol = HeaderTimeoutProtocol(config, ServerState(), {STATE_KEY: timeout},
                                     asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 30)  # a deadline for a loaded machine, not a timing


async def test_the_attributes_it_reads_are_there() -> None:
    protocol, transport = connect(30)
    assert protocol.app_state == {STATE_KEY: 30}
    assert protocol.loop is asyncio.get_running_loop()
    assert protocol.transport is transport and protocol.client == ("192.0.2.7", 40000)
    assert protocol.cycle is None
    protocol.data_received(b"GET /path?q=1 HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n")
    assert protocol.url == b"/path?q=1"
    assert (b"x-a", b"b") in protocol.headers  # uvicorn lower-cases the names
    deadline = asyncio.get_running_loop().time() + 30  # the app runs as a task
    while not protocol.cycle.response_complete and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert protocol.cycle.response_complete is True
    assert transport.written.startswith(b"HTTP/1.1 204 ")
    protocol.connection_lost(None)


async def test_an_incomplete_head_gets_408_and_the_connection_closes() -> None:
    protocol, transport = connect(0.05)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
    await wait(transport.closed)
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'{"detail":"the request head was not complete in time' in transport.written
    protocol.connection_lost(None)


async def test_an_oversized_head_gets_431() -> None:
    protocol, transport = connect(30)
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1))
    await wait(transport.closed)
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    protocol.connection_lost(None)
