"""Taking a domain file's flock from the event loop: never blocking the loop, never polling.

Uncontended: one non-blocking `flock`. Contended: a blocking `flock` in a thread of its own,
awaited with a deadline. The kernel wakes that thread when the holder lets go, so a busy writer
in another process (another worker committing back to back) cannot starve it, as it would a
poll. A wait that outlives its deadline stays: it serves the next caller, or lets go of the lock
at once if there is none.

The file under the name can change while we wait (another writer rotated it). Before it blocks,
the waiting thread checks that the name still points at its file: a closed segment is locked by
its compressor for as long as compressing takes, and waiting for that would stall this writer
for nothing. The caller checks again once it has the lock (`DataFile.follow_rotation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import LockTimeout
from ..metrics import Metrics
from .datafile import DataFile


class FileLock:
    def __init__(self, file: DataFile, pool: ThreadPoolExecutor, metrics: Metrics,
                 lock_timeout: float) -> None:
        self._file = file
        self._pool = pool
        self._metrics = metrics
        self._lock_timeout = lock_timeout
        # A blocking flock in progress; True once it has the lock, False if the file was rotated
        # away before it began (nothing locked).
        self._waiter: asyncio.Future[bool] | None = None
        self._wanted = False  # `acquire` is awaiting `_waiter`

    @property
    def waiting(self) -> bool:
        return self._waiter is not None

    async def acquire(self, deadline: float) -> None:
        """Take the lock by `deadline` (monotonic), else `LockTimeout` with Retry-After."""
        started = time.monotonic()
        try:
            while True:
                if self._waiter is None:
                    if self._file.try_lock():
                        return
                    self._waiter = self._start_waiter()
                waiter = self._waiter
                self._wanted = True
                try:
                    await asyncio.wait_for(asyncio.shield(waiter),
                                           max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    if not waiter.done():
                        raise LockTimeout("lock timeout",
                                          headers={"Retry-After": self._retry_after()}) from None
                finally:
                    self._wanted = False
                self._waiter = None  # ours now: `_on_waiter_done` leaves it alone
                if waiter.result():  # (raises the flock's OSError, if any)
                    return
                await asyncio.get_running_loop().run_in_executor(self._pool, self._file.reopen)
        finally:
            self._metrics.lock_wait_seconds.observe(time.monotonic() - started)

    def _start_waiter(self) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        future.add_done_callback(self._on_waiter_done)
        fd = self._file.fd
        assert fd is not None
        is_current = self._file.is_current  # the file does not change while a waiter runs

        def wait() -> None:
            error: OSError | None = None
            locked = False
            try:
                if is_current():
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    locked = True
            except OSError as exc:
                error = exc

            def settle() -> None:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(locked)

            with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                loop.call_soon_threadsafe(settle)

        threading.Thread(target=wait, name=f"leitstand-lock-{self._file.name}",
                         daemon=True).start()
        return future

    def _on_waiter_done(self, future: asyncio.Future[bool]) -> None:
        """Runs before (or, in a race with the deadline, after) the awaiting `acquire` resumes:
        if nobody wants or took the lock (its callers all timed out), let go of it at once."""
        if self._wanted or self._waiter is not future:
            return
        self._waiter = None
        if not future.cancelled() and future.exception() is None and future.result():
            self._file.unlock()

    def _retry_after(self) -> str:
        return str(max(1, min(int(self._lock_timeout), 30)))
