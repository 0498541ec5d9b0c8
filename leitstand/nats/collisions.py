"""What the sink does with a long domain whose shortened file name another domain owns.

Two long domains share a file name when their prefix and the 8 hex digits of their hash are
equal (`store/owner.py`). The embedded store refuses the second one with 409; the sink cannot,
since the ingest node answered 202 as soon as JetStream stored the message. So the sink checks
the owner record with the embedded store's code (`owner.claim`, under the data file's lock, the
first domain to be written claims the name), never writes another domain's lines into the
owner's file, and keeps them in `.leitstand/collisions/<stem>.jsonl` instead: one file per
shortened name (each line names its domain), written like a data file by a `DomainSink` with
its own sequence log and quarantine in that directory, so exactly once across a crash, and
acknowledged in JetStream only once it is durable there. The first collision of a domain in a
process is logged as an ERROR naming both domains; `leitstand_sink_collided_events_total`
counts the lines kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter

from ..domains import file_stem
from ..errors import DomainCollision
from ..metrics import Metrics
from ..store.datafile import HELPER_DIR, DataFile, open_helper_dir
from ..store.files import storage_error
from ..store.owner import claim, is_shortened, read_owner
from ..store.space import SpaceGuard

if TYPE_CHECKING:
    from .domainsink import DomainSink

log = logging.getLogger("leitstand.sink")

COLLISIONS_DIR = "collisions"  # inside the helper dir


class Collisions:
    """The owners of shortened names, and the collision files of the domains that lost."""

    def __init__(self, dir_fd: int, helper_fd: int, metrics: Metrics, *, fsync: bool,
                 lock_timeout: float, space: SpaceGuard | None,
                 make_sink: Callable[..., DomainSink]) -> None:
        # `make_sink` is the `DomainSink` class (domainsink.py imports this module).
        self._make_sink = make_sink
        self._dir_fd = dir_fd
        self._helper_fd = helper_fd
        self._metrics = metrics
        self._fsync = fsync
        self._lock_timeout = lock_timeout
        self._space = space
        self._fd: int | None = None  # `.leitstand/collisions/`, made at the first collision
        self._owners: dict[str, str] = {}  # stem -> the domain that owns it (records never change)
        self._sinks: dict[str, DomainSink] = {}  # by stem
        self._reported: set[str] = set()
        self.events = Counter(
            "leitstand_sink_collided_events",
            "Events of a long domain whose file name another domain owns, kept in "
            f"{HELPER_DIR}/{COLLISIONS_DIR}/ instead of that domain's file.",
            registry=metrics.registry,
        )

    def owner(self, domain: str) -> str:
        """The domain that owns `domain`'s file name: `domain` itself, unless it is a long
        domain whose name another domain claimed first. Blocking."""
        if not is_shortened(domain):
            return domain
        stem = file_stem(domain)
        owner = self._owners.get(stem)
        if owner is None:
            owner = self._owners[stem] = self._claim(stem, domain)
        return owner

    def _claim(self, stem: str, domain: str) -> str:
        file = DataFile(stem, self._dir_fd, self._helper_fd, self._metrics, fsync=self._fsync,
                        lock_timeout=self._lock_timeout, label=domain)
        try:
            file.open()
            file.lock()
            file.follow_rotation()
            try:
                claim(self._helper_fd, stem, domain, fsync=self._fsync)
            except DomainCollision:
                owner = read_owner(self._helper_fd, stem)
                if owner is None:
                    raise
                return owner
            return domain
        except OSError as exc:
            raise storage_error(exc, f"cannot check who owns {file.name}") from exc
        finally:
            file.close()

    def sink(self, domain: str, owner: str) -> DomainSink:
        """The writer of the collision file of `domain`'s name (which `owner` owns)."""
        stem = file_stem(domain)
        sink = self._sinks.get(stem)
        if sink is None:
            if self._fd is None:
                try:
                    self._fd = open_helper_dir(self._helper_fd, COLLISIONS_DIR)
                except OSError as exc:
                    raise storage_error(exc, f"cannot open {HELPER_DIR}/{COLLISIONS_DIR}") from exc
            sink = self._sinks[stem] = self._make_sink(
                domain, self._fd, self._fd, fsync=self._fsync, lock_timeout=self._lock_timeout,
                metrics=self._metrics, space=self._space, stem=stem)
        if domain not in self._reported:
            self._reported.add(domain)
            log.error(
                "sink: the long domain %r has the same file name %s.jsonl as the domain %r, "
                "which owns it; its events are not written there but kept in %s/%s/%s.jsonl",
                domain, stem, owner, HELPER_DIR, COLLISIONS_DIR, stem)
        return sink

    def route(self, domain: str, own_file: Callable[[str], DomainSink]) -> DomainSink:
        """The writer for `domain`'s lines: `own_file(domain)`, or the collision file if
        another domain owns the name."""
        owner = self.owner(domain)
        return own_file(domain) if owner == domain else self.sink(domain, owner)

    def count(self, sink: DomainSink, lines: int) -> int:
        """Count `lines` written by `sink` if it writes a collision file; return them."""
        if self._sinks.get(sink.stem) is sink:
            self.events.inc(lines)
        return lines

    def close(self) -> None:
        for sink in self._sinks.values():
            sink.close_all()
        self._sinks.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
