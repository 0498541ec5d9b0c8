"""Prometheus metrics, one registry per app so that many apps can live in one process."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
OTHER = "other"


class CappedLabels:
    """At most `limit` distinct label values; any further value is counted as `other`
    (label sets that clients choose must not grow without bound)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


class Children:
    """The children of a labelled metric, remembered by their label values: `labels()` checks
    the values and takes a lock on every call (~7,000 instructions, bench/notes.md), this is
    one dict lookup. Only for label values from a bounded set (route templates and statuses,
    capped token names)."""

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Counter] = {}

    def __call__(self, *values: str) -> Counter:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """All of leitstand's metrics. Domain labels are capped at `max_domains` distinct values;
    further domains are counted under `other`."""

    def __init__(self, max_domains: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._domains = CappedLabels(max_domains)
        r = self.registry
        self.events = Counter(
            "leitstand_events", "Events stored, by domain.", ["domain"], registry=r
        )
        self.bytes = Counter(
            "leitstand_bytes", "Bytes of stored lines, by domain.", ["domain"], registry=r
        )
        self.requests = Counter(
            "leitstand_requests",
            "HTTP requests answered, by route template and status.",
            ["route", "status"],
            registry=r,
        )
        self.requests_by = Children(self.requests)  # per request: (route template, status)
        self.rejections = Counter(
            "leitstand_rejections", "Rejected requests, by reason.", ["reason"], registry=r
        )
        self.append_seconds = Histogram(
            "leitstand_append_seconds",
            "Time from a request entering the store until it is durable.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "leitstand_fsync_seconds", "Duration of fdatasync calls.", buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lock_wait_seconds = Histogram(
            "leitstand_lock_wait_seconds",
            "Time spent waiting for a domain file's flock.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.group_size = Histogram(
            "leitstand_commit_group_requests",
            "Requests coalesced into one write and fsync.",
            buckets=_GROUP_BUCKETS,
            registry=r,
        )
        self.repairs = Counter(
            "leitstand_repairs",
            "Torn trailing lines cut off a data file and kept in quarantine.",
            registry=r,
        )
        self.duplicates = Counter(
            "leitstand_idempotent_replays",
            "Requests answered from the idempotency record without writing.",
            registry=r,
        )
        # The data lifecycle (leitstand/store/: space.py, rotation, compression, retention).
        self.free_bytes = Gauge(
            "leitstand_data_dir_free_bytes",
            "Bytes still free on the data dir's file system (as of the last write or scrape).",
            registry=r,
        )
        self.space_refusals = Counter(
            "leitstand_free_space_refusals",
            "Writes refused with 507 by the free-space guard (LEITSTAND_MIN_FREE_BYTES).",
            registry=r,
        )
        self.rotations = Counter(
            "leitstand_rotations", "Active files closed as segments, by domain.", ["domain"],
            registry=r,
        )
        self.compressions = Counter(
            "leitstand_compressions", "Closed segments compressed, by domain.", ["domain"],
            registry=r,
        )
        self.retention_deletions = Counter(
            "leitstand_retention_deletions", "Segments deleted by retention, by domain.",
            ["domain"], registry=r,
        )
        self.segments = Gauge(
            "leitstand_segments", "Closed segments kept, by domain (as of the last upkeep).",
            ["domain"], registry=r,
        )
        self.disk_bytes = Gauge(
            "leitstand_disk_bytes",
            "Bytes on disk by domain: the active file and its segments (as of the last upkeep).",
            ["domain"], registry=r,
        )
        self.up = Gauge("leitstand_up", "1 while the service is running.", registry=r)
        self.up.set(1)

    def domain_label(self, domain: str) -> str:
        return self._domains.label(domain)

    def stored(self, domain: str, events: int, size: int) -> None:
        label = self.domain_label(domain)
        self.events.labels(label).inc(events)
        self.bytes.labels(label).inc(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
