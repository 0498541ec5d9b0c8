"""Settings files that change while the service runs (schemas, tokens): reload on change and on
SIGHUP, keep the last good value when a reload fails.

A `Reloadable` holds a value loaded from files. `current()` is called on the request path, so it
must be cheap: it only looks at the files (a `fingerprint`, e.g. their stat) when `interval`
seconds have passed since the last look, and loads again only if the fingerprint changed. A
failed load keeps the old value; the error is kept (`error`), logged and counted, until a later
load succeeds. `on_sighup` forces a reload in the running event loop.

Files edited in place (truncate, then write) are half written for a moment, and a half-written
file may well parse (a tokens file that lacks its last entries). With `settle`, a change is
loaded only once the fingerprint has stayed the same for `settle` seconds; and a load during
which the fingerprint changed is thrown away and tried again later. So no half-written file is
ever in force, as long as the writer does not pause for `settle` seconds in the middle.
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
_NOTHING: Hashable = object()  # no change waiting to settle / "unknown, look again"


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
        settle: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[T, str | None], None] | None = None,
    ) -> None:
        self.name = name
        self._load = load
        self._fingerprint = fingerprint
        self._interval = interval
        self._settle = settle
        self._pending = _NOTHING  # a changed fingerprint, waiting to stay so for `settle`
        self._pending_since = 0.0
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
        """The value, after a cheap check for changed files if `interval` has passed (or, while
        a change settles, `settle`)."""
        due = self._interval if self._pending is _NOTHING else min(self._interval, self._settle)
        if self._clock() - self._checked >= due:
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
            self._pending = _NOTHING
            return False
        if self._settle > 0:
            if seen != self._pending:  # (still) being written: wait until it stays so
                self._pending, self._pending_since = seen, self._checked
                return False
            if self._checked - self._pending_since < self._settle:
                return False
        self._pending = _NOTHING
        return self.reload()

    def reload(self) -> bool:
        """Load now; on failure keep the old value and record why. True if the load worked."""
        self._checked = self._clock()
        try:
            self._seen = self._fingerprint()
            value = self._load()
            after = self._fingerprint() if self._settle > 0 else self._seen
            if after != self._seen:  # written while it was read: wait for it to settle
                self._seen, self._pending, self._pending_since = _NOTHING, after, self._checked
                return False
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


def file_fingerprint(path: Path) -> Hashable:
    """One file's identity and state: changes when it is written or replaced (rename)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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
