"""Settings files that change while the service runs (schemas, tokens): reload on change and on
SIGHUP, keep the last good value when a reload fails.

A `Reloadable` holds a value loaded from files. `current()` is called on the request path, so it
must be cheap: it only looks at the files (a `fingerprint`, e.g. their stat) when `interval`
seconds have passed since the last look, and loads again only if the fingerprint changed. A
failed load keeps the old value; the error is kept (`error`), logged and counted, until a later
load succeeds. `on_sighup` forces a reload in the running event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

log = logging.getLogger("leitstand.reload")

T = TypeVar("T")


class Reloadable(Generic[T]):
    """A value loaded by `load()`, reloaded when `fingerprint()` changes (looked at no more than
    once per `interval` seconds) or when `reload()` is called. `load` raises to refuse."""

    def __init__(
        self,
        name: str,
        load: Callable[[], T],
        fingerprint: Callable[[], Hashable],
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[T, str | None], None] | None = None,
    ) -> None:
        self.name = name
        self._load = load
        self._fingerprint = fingerprint
        self._interval = interval
        self._clock = clock
        self._on_change = on_change
        self.failures = 0  # failed reloads since start
        self.error: str | None = None  # why the newest files were refused (None: they are in use)
        # At start a failure is not caught: the caller refuses to start with the error.
        self._seen = fingerprint()
        self.value: T = load()
        self._checked = clock()
        self._notify()

    def current(self) -> T:
        """The value, after a cheap check for changed files if `interval` has passed."""
        if self._clock() - self._checked >= self._interval:
            self.check()
        return self.value

    def check(self) -> bool:
        """Reload if the files changed since the last look; True if a new value is in use."""
        self._checked = self._clock()
        try:
            seen = self._fingerprint()
        except OSError as exc:
            reason = f"cannot read: {exc.strerror or exc}"
            # Still unreadable: reported once, not every `interval`.
            return False if reason == self.error else self._failed(reason)
        if seen == self._seen:
            return False
        self._seen = seen
        return self.reload()

    def reload(self) -> bool:
        """Load now; on failure keep the old value and record why. True if the load worked."""
        self._checked = self._clock()
        try:
            self._seen = self._fingerprint()
            value = self._load()
        except Exception as exc:  # whatever `load` refuses with: the old value stays
            return self._failed(str(exc) or type(exc).__name__)
        self.value = value
        if self.error is not None:
            log.info("%s: reloaded, the earlier error is resolved", self.name)
        else:
            log.info("%s: reloaded", self.name)
        self.error = None
        self._notify()
        return True

    def _failed(self, reason: str) -> bool:
        self.failures += 1
        self.error = reason
        log.error("%s: reload failed, keeping the previous version: %s", self.name, reason)
        self._notify()
        return False

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change(self.value, self.error)


def stat_fingerprint(directory: Path, names: Iterable[str] | None = None) -> Hashable:
    """The directory's and its entries' (name, mtime_ns, size, inode): changes when a file is
    written, replaced (rename), added or removed. `names`: only these entries."""
    entries = []
    with os.scandir(directory) as scan:
        for entry in scan:
            if names is not None and entry.name not in names:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # removed between listing and stat
                continue
            entries.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
    st = directory.stat()
    return (st.st_mtime_ns, st.st_ino, tuple(sorted(entries)))


def on_sighup(callback: Callable[[], Any]) -> bool:
    """Run `callback` in the running event loop whenever the process gets SIGHUP. Handlers
    chain: an earlier Python-level handler (another reloadable's) still runs. Call from the
    running loop in the main thread; elsewhere (tests) nothing is installed and False returned."""
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return False
    loop = asyncio.get_running_loop()
    try:
        previous = signal.getsignal(sighup)
    except ValueError:
        return False

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        if callable(previous):
            previous(signum, frame)

    try:
        signal.signal(sighup, handler)
    except ValueError:  # not the main thread
        return False
    return True
