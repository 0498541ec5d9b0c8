"""The sink's writes into the data directory, through the same file protocol as the embedded
store (`leitstand/store/datafile.py`: names, `flock(LOCK_EX)` on the data file, fsync policy,
a torn tail cut into `.leitstand/<stem>.quarantine`), plus the sink's own sequence log.

Exactly once. Before the data, the sink logs a mark (`seqlog.py`); on start (under the data
file's lock) the last mark decides:

- landed: everything up to its sequence `q` is in the file. Killed after the data fsync but
  before the ack, JetStream redelivers those messages; their sequence is <= q, so they are
  acked, not written.
- not landed, and the file ends at `s`: killed between the mark and the data write; the
  previous mark's `q` holds, the redelivered messages are written.
- not landed, and the file ends inside `[s, s+n)`: killed (or power lost) mid-write; the torn
  bytes are cut into the quarantine file and the messages are written again when redelivered.
- not landed, and the file is longer or another file (rotated): the bytes cannot be told apart
  from an outside writer's; the sink logs it and writes the messages again (a possible duplicate
  beats a loss). This needs a crash in the window *and* an outside writer or a rotation.

A message is the unit: its lines go into the file in one write together with the messages
around it, and are applied (or skipped) as a whole, never in part.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ..domains import file_stem
from ..errors import LeitstandError
from ..metrics import Metrics
from ..store.datafile import DataFile, open_data_dir, open_helper_dir
from ..store.domainfile import StoreOptions
from ..store.files import FILE_MODE, holds, storage_error
from ..store.legacy import migrate_legacy_names
from ..store.maintenance import Maintenance, maintenance_needed
from ..store.rotation import Rotation, RotationPolicy
from ..store.space import SpaceGuard
from .collisions import Collisions
from .seqlog import Mark, SeqLog

log = logging.getLogger("leitstand.sink")

LOCK_NAME = "sink.lock"


class DomainSink(DataFile):
    """Writes one domain's lines. Blocking: run it in a thread."""

    def __init__(self, domain: str, dir_fd: int, helper_fd: int, *, fsync: bool,
                 lock_timeout: float, metrics: Metrics | None = None,
                 rotation: RotationPolicy | None = None, space: SpaceGuard | None = None,
                 after_rotate: Callable[[], None] | None = None, stem: str | None = None) -> None:
        super().__init__(stem or file_stem(domain), dir_fd, helper_fd, metrics or Metrics(),
                         fsync=fsync, lock_timeout=lock_timeout, label=domain)
        self.domain = domain
        # Rotation and the free-space guard, as in the embedded store (store/rotation.py,
        # store/space.py).
        self._rotation = (Rotation(self, rotation, self._metrics)
                          if rotation is not None and rotation.enabled else None)
        if self._rotation is not None:
            self._rotation.after_rotate = after_rotate
        self._space = space
        self._seqs = SeqLog(self.stem, helper_fd, fsync=fsync)
        self._recovered = False
        self.last: Mark | None = None  # the last landed write
        self.written = 0

    @property
    def applied(self) -> int:
        """The highest stream sequence of this domain that is in the file."""
        return self.last.seq if self.last else 0

    def apply(self, items: list[tuple[int, bytes]]) -> int:
        """Append the messages of `items` (stream sequence, the message's lines) not yet
        applied, all in one write; durable on return. Returns how many lines were written."""
        if self.fd is None:
            self.open()
        self.lock()
        try:
            size = self._settle()
            while self._rotation is not None and self._rotation.before_write(size):
                size = self.cut_torn_tail(self.size())
                self._mark_new_file()
            new = [line for seq, line in items if seq > self.applied]
            if len(new) < len(items):
                log.info("%s: %d redelivered messages were written before (up to sequence %d); "
                         "not writing them again", self.name, len(items) - len(new), self.applied)
            if not new:
                return 0
            payload = b"".join(new)
            if self._space is not None:
                self._space.check(len(payload))
            self._write(items[-1][0], payload, size)
            lines = payload.count(b"\n")
            self._metrics.stored(self.domain, lines, len(payload))
            return lines
        except OSError as exc:
            raise storage_error(exc, f"cannot store events for {self.domain}") from exc
        finally:
            self.unlock()

    def rotate_if_old(self, now: float) -> None:
        """Close the file by age though nothing is written to it (the upkeep thread's check,
        `store/maintenance.py`); skipped this round if another process holds the lock."""
        if self._rotation is None:
            return
        if self.fd is None:
            try:
                self.open(create=False)
            except FileNotFoundError:
                return
        if not self.try_lock():
            return
        try:
            if self._rotation.rotate_if_old(self._settle(), now):
                self._mark_new_file()
        except OSError as exc:
            raise storage_error(exc, f"cannot rotate the file of {self.domain}") from exc
        finally:
            self.unlock()

    def close_all(self) -> None:
        self.close()
        self._seqs.close()

    def _settle(self) -> int:
        """(Lock held.) Lock the file the name points to, settle the sequence log against it
        once, cut a torn tail; return its size."""
        self.follow_rotation()
        size = self.size()
        if not self._recovered:
            size = self._recover(size)
            self._recovered = True
        return self.cut_torn_tail(size)

    def _mark_new_file(self) -> None:
        """After a rotation the last mark names the closed file; a start would take it for a
        write it cannot verify. So the log restarts with an empty landed write into the new
        file, at the same sequence."""
        self.last = Mark(self.applied, 0, 0, hashlib.sha256(b"").hexdigest(), self.inode)
        self._seqs.compact(self.last)

    def _write(self, seq: int, payload: bytes, size: int) -> None:
        mark = Mark(seq, size, len(payload), hashlib.sha256(payload).hexdigest(), self.inode)
        self._seqs.append(mark, landed=self.last)
        try:
            self.append(payload)
        except OSError:
            # The mark is void now; keep "only the last mark may be unlanded" true.
            assert self.fd is not None
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, size)
            self._seqs.void_last = True
            raise
        self.last = mark
        self.written += len(payload)
        self._seqs.compact_if_large(self.last)

    def _recover(self, size: int) -> int:
        """Load the sequence log and settle its last mark against the data file."""
        assert self.fd is not None
        marks = self._seqs.read()
        if not marks:
            return size
        last = marks[-1]
        own = self.inode == last.inode
        if own and last.start + last.length <= size and holds(self.fd, last.start, last.length,
                                                              last.digest):
            self.last = last
            return size
        self.last = marks[-2] if len(marks) > 1 else None
        if own and last.start < size <= last.start + last.length:
            size = self.cut(last.start, size, f"cut {size - last.start} bytes of a write the "
                            "sink did not finish")
        elif not own or size != last.start:
            log.error(
                "%s: the sink's last write (stream sequence %d) cannot be verified (the file "
                "was rotated or written by another process meanwhile); writing it again, which "
                "may duplicate up to %d bytes", self.name, last.seq, last.length,
            )
        log.info("%s: the last write before a crash did not land; resuming after sequence %d",
                 self.name, self.applied)
        self._seqs.compact(self.last)
        return size


class DataDir:
    """The sink's side of a data directory: one `DomainSink` per domain, the sink lock
    (`.leitstand/sink.lock`: one sink per data directory), and the collision files of long
    domains whose file name another domain owns (`collisions.py`)."""

    def __init__(self, path: Path, *, fsync: bool, lock_timeout: float,
                 lifecycle: StoreOptions | None = None) -> None:
        self.path = path
        self._fsync = fsync
        self._lock_timeout = lock_timeout
        self.metrics = self._metrics = Metrics()
        self._lifecycle = lifecycle
        self._space: SpaceGuard | None = None
        self._upkeep: Maintenance | None = None
        self._collisions: Collisions | None = None
        self._domains: dict[str, DomainSink] = {}  # by stem
        # Writes (the sink's task, in a thread) and the upkeep thread's age rotations take turns
        # with a domain's writer.
        self._writing = threading.Lock()
        self._fds: list[int] = []  # the data dir, the helper dir, the sink lock
        try:
            self._dir_fd = self._keep(open_data_dir(path))
            self._helper_fd = self._keep(open_helper_dir(self._dir_fd))
            lock_fd = self._keep(os.open(
                LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE,
                dir_fd=self._helper_fd))
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SystemExit(f"leitstand sink: another sink is running on {path}") from None
            migrate_legacy_names(self._dir_fd, self._helper_fd, self._metrics, fsync=fsync,
                                 lock_timeout=lock_timeout)
            if lifecycle is not None:
                self._space = SpaceGuard(self._dir_fd, lifecycle.min_free_bytes, self._metrics)
                self._metrics.free_bytes.set_function(self._space.free_or_nan)
                if maintenance_needed(lifecycle):
                    # Idle files are rotated by age through the sink's own writer: its sequence
                    # log must restart in the new file (`DomainSink._mark_new_file`).
                    self._upkeep = Maintenance(self._dir_fd, self._helper_fd, self._metrics,
                                               lifecycle, interval=lifecycle.upkeep_interval,
                                               rotate_if_old=self._rotate_if_old)
                    self._upkeep.start()
            self._collisions = Collisions(self._dir_fd, self._helper_fd, self._metrics,
                                          fsync=fsync, lock_timeout=lock_timeout,
                                          space=self._space, make_sink=DomainSink)
        except BaseException:
            self.close()
            raise

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def domain(self, domain: str) -> DomainSink:
        sink = self._domains.get(file_stem(domain))
        if sink is None:
            sink = self._domains[file_stem(domain)] = self._new_sink(domain)
        return sink

    def _new_sink(self, domain: str, stem: str | None = None) -> DomainSink:
        return DomainSink(domain, self._dir_fd, self._helper_fd, fsync=self._fsync,
                          lock_timeout=self._lock_timeout, metrics=self._metrics,
                          rotation=self._lifecycle.rotation if self._lifecycle else None,
                          space=self._space,
                          after_rotate=self._upkeep.wake if self._upkeep else None, stem=stem)

    def apply(self, run: list[tuple[int, str, bytes]]) -> int:
        """Write a run of (sequence, domain, lines) in stream order; durable on return.
        Returns how many lines were written."""
        assert self._collisions is not None
        kept = self._collisions
        with self._writing:
            # One write per file, in stream order: a file's writer skips sequences up to its last.
            by_file: dict[DomainSink, list[tuple[int, bytes]]] = {}
            for seq, domain, line in run:
                by_file.setdefault(kept.route(domain, self.domain), []).append((seq, line))
            return sum(kept.count(sink, sink.apply(items)) for sink, items in by_file.items())

    def _rotate_if_old(self, stem: str, now: float) -> None:
        """(The upkeep thread.) Rotate the file of `stem` by age if it is due; a file this
        process has not written yet gets a writer of its own for the check."""
        with self._writing:
            sink = self._domains.get(stem)
            temporary = sink is None
            if sink is None:
                sink = self._new_sink(stem, stem)  # the stem as its label, as in the upkeep
            try:
                sink.rotate_if_old(now)
            except (LeitstandError, OSError) as exc:
                log.warning("cannot rotate %s by age: %s", sink.name, exc)
            finally:
                if temporary:
                    sink.close_all()

    def close(self) -> None:
        if self._upkeep is not None:
            self._upkeep.stop()
            self._upkeep = None
        for sink in self._domains.values():
            sink.close_all()
        self._domains.clear()
        if self._collisions is not None:
            self._collisions.close()
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())
