"""Background upkeep of the data directory, in one thread per process: rotation by age (also of
idle domains), compression of closed segments, retention, and the per-domain disk metrics.

Every step takes the same flocks as any other process (the data file's for rotation, a raw
segment's for compression and deletion), so several workers — or a worker and `leitstand rotate`
— can run it at the same time: whoever gets a lock does the step, the others skip it this round.
A rotation in this process wakes the thread at once; otherwise it looks every `interval` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from ..domains import DATA_SUFFIX
from ..errors import LeitstandError
from ..metrics import Metrics
from .compress import clean, compress_segment, raw_segments
from .datafile import FileMoved
from .domainfile import DomainFile, StoreOptions
from .retention import apply_retention
from .segments import ARCHIVE_DIR, DIR_FLAGS, archive_summary, open_archive

log = logging.getLogger("leitstand.store")


def maintenance_needed(options: StoreOptions) -> bool:
    return (options.rotation.enabled or options.compress != "none"
            or options.retention.enabled)


class Maintenance:
    def __init__(self, dir_fd: int, helper_fd: int, metrics: Metrics, options: StoreOptions,
                 *, interval: float = 5.0,
                 rotate_if_old: Callable[[str, float], None] | None = None) -> None:
        self._dir_fd = dir_fd
        self._helper_fd = helper_fd
        self._metrics = metrics
        self._options = options
        self._interval = interval
        # Rotates the file of a stem by age though nobody writes to it: a `DomainFile` here, or
        # the NATS sink's own writer (its sequence log must follow the rotation).
        self._rotate_if_old = rotate_if_old or self._rotate_domain_file_if_old
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Remove what an interrupted compression left (before anything is compressed), then
        run in the background."""
        for stem in self._archived_stems():
            archive = open_archive(self._dir_fd, stem)
            if archive is not None:
                try:
                    clean(archive, fsync=self._options.fsync)
                finally:
                    os.close(archive)
        self._thread = threading.Thread(target=self._run, name="leitstand-maintenance",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except Exception:  # keep going: the next round may well succeed
                log.exception("data lifecycle maintenance failed")
            self._wake.wait(self._interval)

    # -- one round -----------------------------------------------------------------------------
    def run_once(self) -> None:
        now = time.time()
        stems = set(self._active_stems())
        if self._options.rotation.max_age is not None:
            for stem in sorted(stems):
                self._rotate_if_old(stem, now)
        for stem in sorted(stems | set(self._archived_stems())):
            if self._stop.is_set():
                return
            archive = open_archive(self._dir_fd, stem)
            if archive is not None:
                try:
                    self._tend(stem, archive, now)
                finally:
                    os.close(archive)
            self._measure(stem)

    def _measure(self, stem: str) -> None:
        try:
            st = os.stat(stem + DATA_SUFFIX, dir_fd=self._dir_fd, follow_symlinks=False)
            active, ino = st.st_size, st.st_ino
        except FileNotFoundError:
            active, ino = 0, 0
        segments, size, _ = archive_summary(self._dir_fd, stem, ino)
        label = self._metrics.domain_label(stem)
        self._metrics.segments.labels(label).set(segments)
        self._metrics.disk_bytes.labels(label).set(active + size)

    def _tend(self, stem: str, archive: int, now: float) -> None:
        label = self._metrics.domain_label(stem)
        options = self._options
        if options.compress != "none":
            for segment in raw_segments(archive):
                if self._stop.is_set():
                    return
                if compress_segment(archive, segment, options.compress, fsync=options.fsync):
                    self._metrics.compressions.labels(label).inc()
        if options.retention.enabled:
            deleted = apply_retention(archive, options.retention, now, fsync=options.fsync)
            if deleted:
                self._metrics.retention_deletions.labels(label).inc(len(deleted))

    def _rotate_domain_file_if_old(self, stem: str, now: float) -> None:
        file = DomainFile(stem, self._dir_fd, self._helper_fd, self._metrics, self._options)
        file.wait_when_moved = False  # never poll for a lock from this thread (datafile.py)
        try:
            file.open(create=False)
            if not file.try_lock():
                return  # a writer has it: it checks the age itself
            size = file.recover(tail_only=True)
            assert file.rotation is not None
            file.rotation.rotate_if_old(size, now)
        except FileMoved:
            return  # rotated (by us or another process); the new file is a writer's now
        except (LeitstandError, OSError) as exc:
            log.warning("cannot rotate %s%s by age: %s", stem, DATA_SUFFIX, exc)
        finally:
            file.close_all()

    # -- the directories -----------------------------------------------------------------------
    def _active_stems(self) -> list[str]:
        with os.scandir(self._dir_fd) as entries:
            return [e.name[: -len(DATA_SUFFIX)] for e in entries
                    if e.name.endswith(DATA_SUFFIX) and e.is_file(follow_symlinks=False)]

    def _archived_stems(self) -> list[str]:
        try:
            archive = os.open(ARCHIVE_DIR, DIR_FLAGS, dir_fd=self._dir_fd)
        except OSError:
            return []
        try:
            with os.scandir(archive) as entries:
                return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        finally:
            os.close(archive)
