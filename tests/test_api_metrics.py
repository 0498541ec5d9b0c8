"""/metrics: Prometheus text with events and bytes per domain (label cap), requests by route and
status, rejections by reason, and append latency."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from leitstand.metrics import OTHER, Metrics

from .conftest import TOKEN

pytestmark = pytest.mark.anyio


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics", headers={"X-Auth": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_events_and_bytes_per_domain(client) -> None:
    await client.post("/v1/ingest?domain=aussen", json=[{"n": 1}, {"n": 2}])
    await client.post("/ingest/innen", json={"n": 3})
    samples = await scrape(client)
    assert samples[("leitstand_events_total", (("domain", "aussen"),))] == 2
    assert samples[("leitstand_events_total", (("domain", "innen"),))] == 1
    aussen = len(b'{"n":1,"domain":"aussen"}\n{"n":2,"domain":"aussen"}\n')
    assert samples[("leitstand_bytes_total", (("domain", "aussen"),))] == aussen


async def test_domain_labels_are_capped() -> None:
    metrics = Metrics(max_domains=3)
    for i in range(5):
        metrics.stored(f"d{i}", 1, 10)
    metrics.stored("d0", 1, 10)
    labels = {s.labels["domain"]: s.value for f in text_string_to_metric_families(
        metrics.render().decode()) if f.name == "leitstand_events" for s in f.samples
        if s.name == "leitstand_events_total"}
    assert labels == {"d0": 2, "d1": 1, "d2": 1, OTHER: 2}


async def test_app_caps_domain_labels_at_100(client) -> None:
    for i in range(105):
        response = await client.post(f"/ingest/d{i}", json={})
        assert response.status_code == 200
    samples = await scrape(client)
    domains = {dict(labels)["domain"] for name, labels in samples
               if name == "leitstand_events_total"}
    assert len(domains) == 101 and OTHER in domains
    assert samples[("leitstand_events_total", (("domain", OTHER),))] == 5


async def test_requests_by_route_and_status(client) -> None:
    await client.post("/v1/ingest?domain=aussen", json={})
    await client.post("/v1/ingest?domain=aussen", json={}, headers={"X-Auth": "no"})
    await client.post("/ingest/aussen", json={})
    await client.get("/no/such/path")
    samples = await scrape(client)

    def requests(route: str, status: str) -> float:
        return samples.get(("leitstand_requests_total",
                            (("route", route), ("status", status))), 0)

    assert requests("/v1/ingest", "202") == 1
    assert requests("/v1/ingest", "401") == 1
    # By route template, so that domains in paths cannot blow up the label set.
    assert requests("/ingest/{domain}", "200") == 1
    assert requests("unmatched", "404") == 1
    assert not any("aussen" in dict(labels).get("route", "") for _, labels in samples)


async def test_rejections_by_reason(make_client) -> None:
    client = make_client(rate_limit="4/minute")
    await client.post("/v1/ingest?domain=aussen", json={}, headers={"X-Auth": "no"})
    await client.post("/v1/ingest?domain=aussen", content=b"{", headers={"Content-Type":
                                                                         "application/json"})
    await client.post("/v1/ingest", json={"n": 1})
    await client.post("/v1/ingest?domain=a", json={"domain": "b"})
    await client.post("/v1/ingest?domain=a", json={})
    samples = await scrape(client)
    for reason in ("unauthorized", "invalid_json", "bad_request", "domain_mismatch",
                   "rate_limited"):
        assert samples[("leitstand_rejections_total", (("reason", reason),))] == 1, reason


async def test_append_latency_histogram(client) -> None:
    for _ in range(3):
        await client.post("/v1/ingest?domain=aussen", json={})
    samples = await scrape(client)
    assert samples[("leitstand_append_seconds_count", ())] == 3
    assert samples[("leitstand_append_seconds_sum", ())] > 0
    assert samples[("leitstand_append_seconds_bucket", (("le", "+Inf"),))] == 3


async def test_no_token_in_metrics(client) -> None:
    await client.post("/v1/ingest?domain=aussen", json={"secret": TOKEN})
    await client.post("/v1/ingest?domain=aussen", json={}, headers={"X-Auth": "guess-123"})
    text = (await client.get("/metrics")).text
    assert TOKEN not in text and "guess-123" not in text


async def test_each_app_has_its_own_registry(make_client) -> None:
    a, b = make_client(), make_client()
    await a.post("/ingest/aussen", json={})
    assert ("leitstand_events_total", (("domain", "aussen"),)) not in await scrape(b)


@pytest.mark.parametrize(("doc", "heading"), [("README.md", "## Betrieb & Wartung"),
                                               ("docs/operations.md", "## Operations")])
async def test_every_metric_named_in_the_docs_exists(client, doc, heading) -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / doc).read_text(encoding="utf-8")
    operations = text.split(heading, 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(leitstand_[a-z_]+)`", operations))
    assert {"leitstand_events_total", "leitstand_bytes_total", "leitstand_requests_total",
            "leitstand_rejections_total", "leitstand_append_seconds"} <= named
    await client.post("/v1/ingest?domain=aussen", json={})
    families = {f.name for f in text_string_to_metric_families(
        (await client.get("/metrics")).text)}
    families |= {name + "_total" for name in families}
    assert named <= families, named - families


def test_request_counters_expose_what_a_prometheus_counter_exposes() -> None:
    """`RequestCounter` (plain numbers, a custom collector) and prometheus_client's `Counter`
    with the same increments give the same exposition, `_created` apart (its time)."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from leitstand.metrics import RequestCounter

    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = RequestCounter("x_requests", "Requests.", ["route", "status"], ours_registry)
    theirs = Counter("x_requests", "Requests.", ["route", "status"], registry=theirs_registry)
    for route, status, amount in [("/a", "202", 1), ("/a", "202", 2.5), ("/b", "4\"0\n", 1),
                                  ("/a", "400", 3)]:
        ours(route, status).inc(amount)
        theirs.labels(route, status).inc(amount)
    assert ours("/a", "202") is ours("/a", "202")  # remembered, one series

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created{" not in line]

    assert lines(ours_registry) == lines(theirs_registry)
    created = [line for line in generate_latest(ours_registry).decode().splitlines()
               if line.startswith("x_requests_created{")]
    assert len(created) == 3
    with pytest.raises(ValueError):
        ours("/a")


def test_request_histogram_exposes_what_a_prometheus_histogram_exposes() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from leitstand.metrics import RequestHistogram

    bounds = (0.001, 0.01, 0.1, 1)
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = RequestHistogram("x_seconds", "Seconds.", bounds, ours_registry)
    theirs = Histogram("x_seconds", "Seconds.", buckets=bounds, registry=theirs_registry)
    for amount in (0.0, 0.0005, 0.001, 0.0010001, 0.05, 0.1, 0.7, 1, 3.5, 1e9):
        ours.observe(amount)
        theirs.observe(amount)

    def lines(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines()
                if not line.startswith("x_seconds_created ")]

    assert lines(ours_registry) == lines(theirs_registry)
    assert any(line.startswith("x_seconds_created ")
               for line in generate_latest(ours_registry).decode().splitlines())
