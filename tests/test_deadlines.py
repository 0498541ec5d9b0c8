"""The body deadline (leitstand/http/deadlines.py): one timer per loop cancels the reads past
their deadline; they raise TimeoutError, anything else passes through unchanged, and nothing is
left behind. (Real server: test_hardening_server's slow-body tests.)"""

from __future__ import annotations

import asyncio
import sys

import pytest

from leitstand.http import deadlines
from leitstand.http.deadlines import within

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 uses asyncio.wait_for")

TICK = 0.01


def state() -> deadlines._LoopDeadlines:
    return deadlines._per_loop[asyncio.get_running_loop()]


async def never() -> None:
    await asyncio.Event().wait()


async def outcome(coro: object, net: float = 20.0) -> BaseException | object:
    """What `coro` returned or raised, run as a task of its own; AssertionError if it has not
    ended after `net` seconds (a safety net that, unlike wait_for, is no TimeoutError)."""
    task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    done, _ = await asyncio.wait({task}, timeout=net)
    if not done:
        task.cancel()
        raise AssertionError(f"still running after {net} s")
    return task.exception() or task.result()


async def value_after(delay: float) -> str:
    await asyncio.sleep(delay)
    return "body"


def test_a_read_in_time_returns_its_value_and_leaves_nothing() -> None:
    async def main() -> None:
        assert await within(value_after(0.02), 30, tick=TICK) == "body"
        assert not state().reads and not state().expired
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_read_past_its_deadline_raises_timeout_error() -> None:
    async def read() -> int:
        with pytest.raises(TimeoutError):
            await within(never(), 0.05, tick=TICK)
        return asyncio.current_task().cancelling()  # type: ignore[union-attr]

    async def main() -> None:
        assert await outcome(read()) == 0  # TimeoutError, and the cancel was taken back
        assert not state().reads and not state().expired
        await asyncio.sleep(TICK * 3)
        assert state().timer is None  # no reads: the timer stops

    asyncio.run(main())


def test_a_cancel_from_outside_stays_a_cancel() -> None:
    async def reader() -> None:
        await within(never(), 30, tick=TICK)

    async def main() -> None:
        task = asyncio.create_task(reader())
        await asyncio.sleep(TICK * 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not state().reads

    asyncio.run(main())


def test_errors_of_the_read_pass_through() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("too large")

    async def main() -> None:
        with pytest.raises(ValueError, match="too large"):
            await within(failing(), 30, tick=TICK)
        assert not state().reads

    asyncio.run(main())


def test_every_loop_keeps_its_own_deadlines() -> None:
    loop = asyncio.new_event_loop()
    task = loop.create_task(within(never(), 30, tick=TICK))
    loop.run_until_complete(asyncio.sleep(TICK))  # the first loop's timer is armed...
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.close()  # ...and the loop goes away

    async def main() -> None:
        assert isinstance(await outcome(within(never(), 0.05, tick=TICK)), TimeoutError)

    asyncio.run(main())
