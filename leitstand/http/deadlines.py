"""Deadlines for reading request bodies, kept by one timer per event loop instead of one per
request.

`asyncio.timeout` arms a loop timer when a request starts reading its body and cancels it when
the read is done: ~4-6 us per request under uvloop, more than the read of a small body itself
(bench/notes.md). Here a read only notes its task and deadline in a dict; while any read is in
progress, one timer per loop wakes every `tick` seconds and cancels the reads past their
deadline, which then raise `TimeoutError` as with `asyncio.timeout`. A deadline is met to within
`tick` (0.1 s against LEITSTAND_BODY_TIMEOUT's default of 30 s).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

_T = TypeVar("_T")
TICK = 0.1


class _LoopDeadlines:
    """The reads in progress on one event loop, and its timer (touched from that loop only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        self.reads: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Task[Any], seconds: float) -> None:
        self.reads[task] = self.loop.time() + seconds
        if self.timer is None:
            self.timer = self.loop.call_later(self.tick, self._sweep)

    def done(self, task: asyncio.Task[Any]) -> bool:
        """Forget `task`'s read; True if it was cancelled for its deadline (that cancel is
        taken back, as `asyncio.timeout` does)."""
        self.reads.pop(task, None)
        if task not in self.expired:
            return False
        self.expired.discard(task)
        task.uncancel()
        return True

    def _sweep(self) -> None:
        now = self.loop.time()
        for task, deadline in list(self.reads.items()):
            if deadline <= now and task not in self.expired:
                self.expired.add(task)
                task.cancel()
        self.timer = self.loop.call_later(self.tick, self._sweep) if self.reads else None


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopDeadlines] = (
    weakref.WeakKeyDictionary())
_HAS_UNCANCEL = hasattr(asyncio.Task, "uncancel")  # Python 3.11+


async def within(awaitable: Awaitable[_T], seconds: float, tick: float = TICK) -> _T:
    """The awaitable's result, or `TimeoutError` once `seconds` have passed (to within
    `tick`). Where Python lacks `Task.uncancel` (3.10): `asyncio.wait_for`."""
    if not _HAS_UNCANCEL:
        return await asyncio.wait_for(awaitable, seconds)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    deadlines = _per_loop.get(loop)
    if deadlines is None:
        deadlines = _per_loop[loop] = _LoopDeadlines(loop, tick)
    cancelling = task.cancelling()
    deadlines.add(task, seconds)
    ours = False
    try:
        return await awaitable
    except asyncio.CancelledError:
        ours = deadlines.done(task)
        if ours and task.cancelling() <= cancelling:
            raise TimeoutError from None  # our cancel alone: the deadline passed
        raise
    finally:
        if not ours:  # also takes back a cancel of ours that came too late to stop the read
            deadlines.done(task)
