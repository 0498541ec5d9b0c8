"""An async httpx transport (such as `httpx.ASGITransport(app=app)`) for the sync `Client`.

Each request runs on an event loop in a thread that this transport owns: started on first use,
stopped by `close()`. One loop for the client's whole life matters for in-process apps: their
asyncio state is bound to the loop they first ran on. A thread (not the caller's thread) lets a
sync call work even inside a running event loop.
"""

from __future__ import annotations

import contextlib
import threading

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal


class AsyncTransportBridge(httpx.BaseTransport):
    """Drives `inner` from sync code. Answers are read whole (streaming needs a sync
    transport). Closing stops the loop; `inner` itself belongs to the caller."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._stack = contextlib.ExitStack()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._running().call(self._send, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return httpx.Response(response.status_code, headers=response.headers, content=content,
                              extensions=response.extensions)

    def _running(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                self._portal = self._stack.enter_context(
                    start_blocking_portal(name="leitstand-client-loop"))
            return self._portal

    def close(self) -> None:
        with self._lock:
            self._portal = None
            self._stack.close()
