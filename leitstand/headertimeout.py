"""A uvicorn HTTP protocol with a deadline for the request head (against slow-header clients).

uvicorn closes idle keep-alive connections, but it has no deadline for a request head that
trickles in byte by byte, nor for a fresh connection that sends nothing at all (slowloris): such
connections stay open for ever. Start the service with

    uvicorn app:app --http leitstand.headertimeout:HeaderTimeoutProtocol

and every connection must deliver a complete request head within LEITSTAND_HEADER_TIMEOUT
seconds of connecting (or of the first byte of its next request); otherwise it gets a 408 and is
closed. The body has its own deadline (LEITSTAND_BODY_TIMEOUT, enforced by the app).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The app's lifespan puts LEITSTAND_HEADER_TIMEOUT into the ASGI lifespan state under this key;
# uvicorn hands that state to every connection.
STATE_KEY = "leitstand_header_timeout"
DEFAULT_TIMEOUT = 10.0
_BODY = b'{"detail":"the request head was not complete in time (LEITSTAND_HEADER_TIMEOUT)"}'
_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)

log = logging.getLogger("leitstand.access")


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a head deadline per request."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        timeout = float(self.app_state.get(STATE_KEY, DEFAULT_TIMEOUT))
        self._head_timer = self.loop.call_later(timeout, self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        # Answer only if no earlier response on this connection is still being written.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_RESPONSE)
        log.info("closed a connection from %s: request head not complete in time",
                 self.client[0] if self.client else "-")
        self.transport.close()
