"""Prometheus metrics, one registry per app so that many apps can live in one process."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

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


class RequestCounter:
    """A labelled counter for the request path, exposed as a Prometheus counter through a
    custom collector (prometheus_client's documented way to expose values kept elsewhere).

    `counter(*label_values).inc(n)` as with a `Counter`'s child, but each child is a plain
    number: prometheus_client's `Counter.inc` (its observability check, its value object with
    its lock, the exemplar handling) cost ~5,500 instructions per call, and a single event made
    three of them (bench/notes.md). The exposition is the same as a `Counter`'s: `<name>_total`
    and `<name>_created` per child (tests/test_api_metrics.py compares the two). Only for
    label values from a bounded set (route templates and statuses, capped token names).
    Not thread-safe: count from the event loop only (the access log and the token check run
    there, for the ingest front and the FastAPI routes alike); /metrics may read from any
    thread."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Count] = {}
        registry.register(self)

    def __call__(self, *values: str) -> _Count:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: expected labels {self._labelnames}")
            child = self._children.setdefault(values, _Count())
        return child

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value, created=child.created)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class RequestHistogram:
    """An unlabelled histogram for the request path, kept as RequestCounter keeps its counts
    (plain numbers, a custom collector; observed from the event loop only): prometheus_client's
    `Histogram.observe` cost ~7,800 instructions per request (bench/notes.md). The exposition
    is a `Histogram`'s (tests/test_api_metrics.py compares the two)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = (*(float(b) for b in buckets), math.inf)
        self._counts = [0] * len(self._bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._created = time.time()
        registry.register(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1  # the first bound >= it
        self._sum += amount

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation)
        buckets, total = [], 0
        for bound, count in zip(self._bounds, list(self._counts), strict=True):
            total += count
            buckets.append((floatToGoString(bound), float(total)))  # type: ignore[no-untyped-call]
        family.add_metric([], buckets, sum_value=self._sum)
        family.add_sample(self._name + "_created", {}, self._created)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._documentation)


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
        # per request: (route template, status)
        self.requests_by = RequestCounter(
            "leitstand_requests", "HTTP requests answered, by route template and status.",
            ["route", "status"], registry=r,
        )
        self.rejections = Counter(
            "leitstand_rejections", "Rejected requests, by reason.", ["reason"], registry=r
        )
        self.append_seconds = RequestHistogram(
            "leitstand_append_seconds",
            "Time from a request entering the store until it is durable.",
            _LATENCY_BUCKETS, r,
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
