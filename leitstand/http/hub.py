"""The wake-up hub of the live stream: the store acknowledged new events of a domain → the
stream clients of that domain read again. Ingest never waits for a client: `publish` sets an
event and returns, O(1) however many clients there are."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType
from typing import Any


class Hub:
    """Wakes the stream clients of a domain after the store acknowledged new events."""

    def __init__(self) -> None:
        self._waiters: dict[str, asyncio.Event] = {}
        self.closing = asyncio.Event()  # set on shutdown: every stream ends

    def waiter(self, domain: str) -> asyncio.Event:
        """Take this before reading, then wait on it: no publish in between is missed."""
        event = self._waiters.get(domain)
        if event is None:
            event = self._waiters[domain] = asyncio.Event()
        return event

    def publish(self, domain: str) -> None:
        event = self._waiters.pop(domain, None)
        if event is not None:
            event.set()

    def close(self) -> None:
        """End every stream (the server is shutting down)."""
        self.closing.set()


def close_streams_on_exit_signals(hub: Hub) -> None:
    """Chain SIGINT/SIGTERM handlers (uvicorn's) so that open streams end on shutdown:
    uvicorn waits for running responses to finish before it stops, and a stream never would.
    Call it from the running loop in the main thread; elsewhere (tests) it does nothing."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous = signal.getsignal(sig)
        except ValueError:
            return
        if not callable(previous):
            continue  # default or ignored: no server loop of ours to stop

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(hub.close)
            previous(signum, frame)

        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            return
