"""The client's side of the spool (`LEITSTAND_SPOOL_DIR`): which failures are kept for later,
when spooled batches are sent again, and what a drain does with each answer.

No HTTP here: `Client` and `AsyncClient` make the calls, as with the rest of `core.py`.

- A batch that still fails after the retries with a failure that time can heal (no answer,
  5xx, 429, 408) is appended to the spool; the call returns a receipt with `spooled=True`.
  Everything else (400, 401, 403, 404, 413, 422, a TLS failure) raises at once.
- While anything is spooled, new batches queue behind it (order is kept): each call first
  tries to drain (when a try is due), and spools its own batch if the queue stays non-empty.
- A drain sends the queue oldest first, each entry under its own Idempotency-Key, and removes an
  entry only after the server has it. It stops at the first failure time can heal (and tries
  again after a backoff); an entry the server refuses for good moves to `rejected/`, an auth
  failure stops the drain and keeps everything.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .config import ClientConfig
from .core import Ingest
from .errors import AuthError, IngestError, NetworkError, RateLimitedError, ServerError
from .protocol import Receipt
from .retry import RetryPolicy
from .spool import Entry, Spool

HEALS_WITH_TIME = (NetworkError, ServerError, RateLimitedError)
# How often (seconds) an idle background drain looks for spooled batches.
IDLE_POLL = 1.0


def spoolable(error: IngestError) -> bool:
    """A failure that time may heal: keep the batch rather than raise."""
    return isinstance(error, HEALS_WITH_TIME) or error.status == 408


def emptied(drain: Drain | None) -> bool:
    """Did `drain` run and leave the queue empty?"""
    return drain is not None and drain.empty


class Drain:
    """One pass over the queue under the drain lock, oldest entry first:

        for ingest in drain:            # the request of the next entry
            <call it>; then drain.sent(receipt) or drain.failed(error)

    Afterwards: `batches`/`events` (stored now), `rejected`, `error` (why it stopped early, if
    it did) and `empty` (the queue was empty at the end)."""

    def __init__(self, spool: Spool, policy: RetryPolicy, stop: Callable[[], bool]) -> None:
        self.batches = self.events = self.rejected = 0
        self.error: IngestError | None = None
        self.empty = False
        self._spool = spool
        self._policy = policy
        self._stop = stop
        self._entry: Entry | None = None

    def __iter__(self) -> Iterator[Ingest]:
        while not self._stop():
            names = self._spool.names()
            if not names:
                self.empty = True
                return
            for name in names:
                entry = self._read(name)
                if entry is None:
                    continue
                self._entry = entry
                yield Ingest(self._policy, entry.domain, entry.body, entry.content_type,
                             entry.key)
                if self.error is not None or self._stop():
                    return

    def _read(self, name: str) -> Entry | None:
        try:
            return self._spool.read(name)
        except (ValueError, KeyError, TypeError) as exc:
            self._spool.reject(name)
            self._spool.record_error(f"unreadable spool entry moved to rejected/: {exc}", name)
            self.rejected += 1
            return None

    def sent(self, receipt: Receipt) -> None:
        assert self._entry is not None
        self._spool.remove(self._entry.name, self._entry.size)
        self.batches += 1
        self.events += self._entry.events

    def failed(self, error: IngestError) -> None:
        assert self._entry is not None
        name = self._entry.name
        if spoolable(error) or isinstance(error, AuthError):
            self.error = error
            self._spool.record_error(str(error), name)
            return
        self._spool.reject(name)
        self._spool.record_error(f"the server refused a spooled batch, moved to rejected/: "
                                 f"{error}", name)
        self.rejected += 1


class Spooler:
    """The spool of one client, and when to try draining it again (a backoff after a drain that
    stopped early; shared by the calls and the background drain)."""

    def __init__(self, config: ClientConfig, policy: RetryPolicy) -> None:
        self.spool = Spool(config.spool_dir, config.spool_max_bytes)
        self._patient = policy
        # Calls and the background drain try each entry once, then back off as a whole.
        self._once = dataclasses.replace(policy, retries=0)
        self._idle = min(IDLE_POLL, config.max_backoff)
        self._lock = threading.Lock()
        self._failures = 0
        self._next_try = 0.0

    def keep(self, ingest: Ingest, events: int, error: IngestError | None) -> Receipt:
        """Append the batch of `ingest` to the spool (raises `SpoolFullError` if it is full)."""
        self.spool.append(ingest.domain, ingest.key, ingest.content_type, events, ingest.body)
        if error is not None:
            self.spool.record_error(str(error))
        return Receipt(0, 0, ingest.domain, False, ingest.key, ingest.attempts, spooled=True)

    def must_wait(self) -> bool:
        """Are batches spooled, so that new ones must queue behind them?"""
        return self.spool.pending()

    def due(self) -> bool:
        """Is a drain worth trying now (not within the backoff after one that failed)?"""
        with self._lock:
            return time.monotonic() >= self._next_try

    def drain_now(self) -> bool:
        """For the background drain: is something spooled, and a try due?"""
        if self.spool.pending():
            return self.due()
        with self._lock:
            self._failures, self._next_try = 0, 0.0
        return False

    def pause(self) -> float:
        """Seconds the background drain sleeps before it looks again: the backoff after a
        failed drain, else a short poll (other processes may spool into the same directory)."""
        with self._lock:
            if self._failures:
                return max(0.0, self._next_try - time.monotonic())
            return self._idle

    @contextmanager
    def draining(self, *, patient: bool = False,
                 stop: Callable[[], bool] = lambda: False) -> Iterator[Drain | None]:
        """A drain, or None if another one (in any process) is running. `patient` (for
        `leitstand spool flush`): wait for the lock, and retry each entry as a send would."""
        with self.spool.draining(wait=patient) as locked:
            if not locked:  # another process drains: look again later
                with self._lock:
                    self._next_try = time.monotonic() + self._idle
                yield None
                return
            drain = Drain(self.spool, self._patient if patient else self._once, stop)
            yield drain
        with self._lock:
            if drain.error is None:
                self._failures, self._next_try = 0, 0.0
            else:
                self._next_try = time.monotonic() + self._once.backoff_delay(self._failures)
                self._failures += 1
