"""One domain's data file with its intent log: the blocking half of the JSONL store.

Everything here runs in a worker thread while the caller holds `flock(LOCK_EX)` on the data file
(except `open` and `try_lock`). `recover` makes the file clean (a group or line torn by a crash is
cut into the quarantine file), `commit` appends a group of requests as one `write()` and one
`fdatasync()`, or nothing at all. The file protocol underneath (opening, locking, rotation,
quarantine, fsync policy) is `datafile.py`, shared with the NATS sink.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field

from ..errors import IdempotencyConflict, LeitstandError
from ..metrics import Metrics
from .base import AppendResult, Idempotency
from .datafile import DataFile
from .files import holds, storage_error
from .intents import Group, Intent, IntentLog
from .owner import claim, is_shortened
from .retention import RetentionPolicy
from .rotation import Rotation, RotationPolicy
from .space import DEFAULT_MIN_FREE_BYTES, SpaceGuard

log = logging.getLogger("leitstand.store")


@dataclass(frozen=True, slots=True)
class StoreOptions:
    lock_timeout: float = 30.0
    fsync: bool = True
    idempotency_window: float = 86_400.0
    idempotency_max_keys: int = 100_000
    io_threads: int = 16
    # Domains whose files stay open (2 descriptors each); idle ones beyond are closed.
    max_open_domains: int = 128
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    rotation: RotationPolicy = field(default_factory=RotationPolicy)
    compress: str = "none"  # of closed segments: zstd, gzip or none
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    upkeep_interval: float = 5.0  # seconds between rounds of maintenance.py without a wake-up


Outcome = AppendResult | LeitstandError


class DomainFile(DataFile):
    """The data file `<stem>.jsonl` with its intent log `.leitstand/<stem>.idem`."""

    def __init__(self, stem: str, dir_fd: int, helper_fd: int, metrics: Metrics,
                 options: StoreOptions, *, label: str | None = None,
                 space: SpaceGuard | None = None) -> None:
        super().__init__(stem, dir_fd, helper_fd, metrics, fsync=options.fsync,
                         lock_timeout=options.lock_timeout, label=label)
        self.space = space
        self._owner_checked = label is None or not is_shortened(label)
        self.rotation = (Rotation(self, options.rotation, metrics)
                         if options.rotation.enabled else None)
        self.intents = IntentLog(stem + ".idem", helper_fd, window=options.idempotency_window,
                                 max_keys=options.idempotency_max_keys)

    def close_all(self) -> None:
        self.close()
        self.intents.close()

    # -- recovery (lock held) ------------------------------------------------------------------
    def recover(self, *, tail_only: bool = False) -> int:
        """Make the file end at a clean line boundary; return its size."""
        self.follow_rotation()
        size = self.size()
        dead = self.intents.catch_up(tail_only=tail_only)
        if dead is not None:
            size = self._resolve_dead_group(dead, size)
        return self.cut_torn_tail(size)

    def _resolve_dead_group(self, group: Group, size: int) -> int:
        """A writer died between logging `group` and resolving it: all of it stays, or none."""
        assert self.fd is not None
        own = self.inode == group.ino
        if own and group.start < size < group.end:
            size = self.cut(group.start, size, f"cut {size - group.start} bytes of a group a "
                            "crashed writer left torn")
        committed = own and size >= group.end and all(
            holds(self.fd, i.start, i.length, i.digest) for i in group.intents
        )
        self.intents.resolve(group, committed=committed, fsync=self.fsync)
        log.info("%s: a group a crashed writer left open (bytes %d-%d) was %s", self.name,
                 group.start, group.end, "complete: kept" if committed else "void")
        return size

    # -- appending (lock held) -----------------------------------------------------------------
    def commit(self, requests: list[tuple[list[bytes], Idempotency | None]]) -> list[Outcome]:
        """Append the requests' lines as one group; one outcome per request. Raises a
        `LeitstandError` (and leaves the file as it was) if the group cannot be stored."""
        assert self.fd is not None
        fsync = self.fsync
        try:
            size = self.recover()
            if not self._owner_checked:
                claim(self.helper_fd, self.stem, self.label, fsync=fsync)
                self._owner_checked = True
            while self.rotation is not None and self.rotation.before_write(size):
                size = self.recover()
            outcomes: list[Outcome] = []
            payloads: list[bytes] = []
            events = 0
            group = Group(self.inode, size, size, time.time())
            for lines, key in requests:
                if key is not None:
                    record = self.intents.lookup(key.key)
                    if record is not None:
                        outcomes.append(self._replay(record.fingerprint, record.accepted, key))
                        continue
                payload = b"".join(lines)
                if key is not None:
                    group.intents.append(Intent(
                        key.key, key.fingerprint, group.end, len(payload),
                        hashlib.sha256(payload).hexdigest(), len(lines)))
                group.end += len(payload)
                payloads.append(payload)
                events += len(lines)
                outcomes.append(AppendResult(len(lines)))
            if payloads:
                if self.space is not None:
                    self.space.check(group.end - group.start)
                self.intents.begin(group, fsync=fsync)
                self._write(b"".join(payloads), group)
        except OSError as exc:
            raise storage_error(exc, f"cannot store events in {self.name}") from exc
        if payloads:
            self._metrics.stored(self.label, events, group.end - group.start)
            self._settle(group, fsync)
        return outcomes

    def _replay(self, fingerprint: str, accepted: int, key: Idempotency) -> Outcome:
        if fingerprint != key.fingerprint:
            return IdempotencyConflict("Idempotency-Key was already used with a different body")
        self._metrics.duplicates.inc()
        return AppendResult(accepted, replayed=True)

    def _write(self, payload: bytes, group: Group) -> None:
        try:
            self.append(payload)
        except OSError:
            self._undo(group, self.fsync)
            raise

    def _undo(self, group: Group, fsync: bool) -> None:
        """Nothing of a failed group may stay behind: cut back and void it. A failed fsync is
        never retried; after one the page cache cannot be trusted, so the file is reopened
        (closing it releases the lock; the caller's unlock is then a no-op)."""
        assert self.fd is not None
        try:
            os.ftruncate(self.fd, group.start)
            if fsync:
                os.fdatasync(self.fd)
        except OSError:
            # The group's bytes may still be there; the next lock holder resolves it by size.
            log.exception("cannot cut %s back to %d bytes", self.name, group.start)
            self.close()
            return
        try:
            self.intents.resolve(group, committed=False, fsync=False)
        except OSError:
            log.exception("cannot void a failed group in the intent log of %s", self.name)
        self.close()

    def _settle(self, group: Group, fsync: bool) -> None:
        """The group is durable: resolve it in the log and compact the log now and then.
        Failures here lose nothing (the next lock holder resolves the group by size)."""
        try:
            self.intents.resolve(group, committed=True, fsync=False)
            self.intents.compact_if_large(fsync=fsync)
        except OSError:
            log.exception("cannot update the intent log of %s", self.name)

