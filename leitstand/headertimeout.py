"""A uvicorn HTTP protocol with a deadline for the request head (against slow-header clients).

uvicorn closes idle keep-alive connections, but it has no deadline for a request head that
trickles in byte by byte, nor for a fresh connection that sends nothing at all (slowloris): such
connections stay open for ever. Start the service with

    uvicorn app:app --http leitstand.headertimeout:HeaderTimeoutProtocol

and every connection must deliver a complete request head within LEITSTAND_HEADER_TIMEOUT
seconds of connecting (or of the first byte of its next request); otherwise it gets a 408 and is
closed. A request head may be at most MAX_HEAD_BYTES long (httptools itself has no limit): a
longer one gets a 431 and the connection is closed. The body has its own deadline
(LEITSTAND_BODY_TIMEOUT, enforced by the app) and size limit (LEITSTAND_MAX_BODY).

uvicorn has no public hook for this, so the class overrides httptools parser callbacks and reads
a few instance attributes of uvicorn's protocol (`app_state`, `loop`, `url`, `headers`,
`transport`, `cycle`, `client`). uvicorn is therefore pinned exactly (requirements.txt), and
tests/test_api_headertimeout.py fails when those internals change.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The app's lifespan puts LEITSTAND_HEADER_TIMEOUT into the ASGI lifespan state under this key;
# uvicorn hands that state to every connection.
STATE_KEY = "leitstand_header_timeout"
DEFAULT_TIMEOUT = 10.0
MAX_HEAD_BYTES = 64 * 1024


def _answer(status: bytes, detail: str) -> bytes:
    body = b'{"detail":"' + detail.encode() + b'"}'
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


_TIMEOUT = _answer(b"408 Request Timeout",
                   "the request head was not complete in time (LEITSTAND_HEADER_TIMEOUT)")
_TOO_LARGE = _answer(b"431 Request Header Fields Too Large",
                     f"the request head is larger than {MAX_HEAD_BYTES} bytes")

log = logging.getLogger("leitstand.access")


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a head deadline per request."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _refused = False  # answered 408/431 and closing: the rest of the input is ignored

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        in_head = self._head_timer is not None
        self._head_bytes += len(data) if in_head else 0
        super().data_received(data)
        # Bytes that completed a head in this call (and any body after it) do not count.
        if in_head and self._head_timer is not None and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(_TOO_LARGE, "request head too large")

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._disarm_head_deadline()
        # A head that arrived in one read is only measured here (uvicorn kept its parts).
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:
            self._refuse(_TOO_LARGE, "request head too large")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._head_bytes = 0
        timeout = float(self.app_state.get(STATE_KEY, DEFAULT_TIMEOUT))
        self._head_timer = self.loop.call_later(timeout, self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        self._refuse(_TIMEOUT, "request head not complete in time")

    def _refuse(self, answer: bytes, why: str) -> None:
        self._disarm_head_deadline()
        self._refused = True
        if self.transport.is_closing():
            return
        # Answer only if no earlier response on this connection is still being written.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(answer)
        log.info("closed a connection from %s: %s", self.client[0] if self.client else "-", why)
        self.transport.close()
