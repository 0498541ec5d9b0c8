"""One long-lived event loop in a daemon thread, for driving async transports from sync code.

A single loop (not a fresh one per call) matters for in-process apps such as
`httpx.ASGITransport(app=app)`: the app's own asyncio state is bound to the loop it first ran on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="leitstand-client-loop",
                                      daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the background loop and wait for its result (from any thread)."""
    return asyncio.run_coroutine_threadsafe(coro, _running_loop()).result()
