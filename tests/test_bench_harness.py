"""The benchmark harness's own logic (fast, no load): reading wrk's summary and checking a
data file against the acknowledged requests. The benchmarks themselves run with `make bench`."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench import cases
from bench.wrk import parse_output

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:1234/v1/ingest?domain=bench
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  40.00ms   90.00%
  51234 requests in 10.00s, 9.10MB read
BENCH_RESULT {"requests":51234,"duration_us":10001000,"bytes":9540000,"ok":51200,"non_ok":34,\
"errors":{"connect":0,"read":1,"write":0,"status":34,"timeout":2},\
"latency_us":{"mean":3100.5,"p50":2900,"p90":4100,"p99":12345,"max":40000}}
Requests/sec:   5122.88
"""


def test_parse_wrk_summary_line() -> None:
    result = parse_output(WRK_OUTPUT)
    assert (result.requests, result.ok, result.non_ok) == (51234, 51200, 34)
    assert result.seconds == pytest.approx(10.001)
    assert result.errors == {"connect": 0, "read": 1, "write": 0, "status": 34, "timeout": 2}
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (2.9, 12.345, 40.0)
    assert result.ok_per_second == pytest.approx(51200 / 10.001)


def test_parse_rejects_output_without_summary() -> None:
    with pytest.raises(ValueError, match="BENCH_RESULT"):
        parse_output("wrk: unable to connect\n")


def _stored(kind: cases.Kind, batches: int) -> bytes:
    batch = b"".join(orjson.dumps(e) + b"\n" for e in kind.stored())
    return batch * batches


def test_verify_file_counts_whole_batches(tmp_path: Path) -> None:
    kind = cases.KINDS["ndjson100"]
    path = tmp_path / "bench.jsonl"
    path.write_bytes(_stored(kind, 3))
    assert cases.verify_file(path, kind) == cases.Stored(3, 300)


@pytest.mark.parametrize("damage", ["torn", "partial_batch", "foreign", "reordered"])
def test_verify_file_rejects_damage(tmp_path: Path, damage: str) -> None:
    kind = cases.KINDS["ndjson100"]
    data = _stored(kind, 2)
    lines = data.splitlines(keepends=True)
    if damage == "torn":
        data = data[:-5]
    elif damage == "partial_batch":
        data = b"".join(lines[:-1])
    elif damage == "foreign":
        data = b"".join(lines[:150]) + b'{"other":1}\n' + b"".join(lines[151:])
    else:
        data = b"".join([*lines[:100], lines[101], lines[100], *lines[102:]])
    path = tmp_path / "bench.jsonl"
    path.write_bytes(data)
    with pytest.raises(cases.VerifyError):
        cases.verify_file(path, kind)


def test_acknowledged_check_allows_only_requests_in_flight() -> None:
    check = cases.check_acknowledged
    assert check(stored=100, ok=100, non_ok=0, connections=64, socket_errors=0) is None
    assert check(stored=164, ok=100, non_ok=0, connections=64, socket_errors=0) is None
    assert "LOST" in (check(stored=99, ok=100, non_ok=0, connections=64, socket_errors=0) or "")
    assert check(stored=165, ok=100, non_ok=0, connections=64, socket_errors=0)
    assert check(stored=100, ok=100, non_ok=1, connections=64, socket_errors=0)


def test_schema_cases_use_a_10_property_schema_their_events_match() -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(cases.SCHEMA)
    assert len(cases.SCHEMA["properties"]) == 10
    validator = Draft202012Validator(cases.SCHEMA)
    for name in ("single-schema", "ndjson100-schema"):
        kind = cases.KINDS[name]
        assert kind.schema is cases.SCHEMA
        assert all(validator.is_valid(e) for e in kind.stored())
    plain = cases.KINDS["ndjson100"]
    assert plain.schema is None
    assert cases.KINDS["ndjson100-schema"].body() == plain.body()  # only the schema differs
    assert not validator.is_valid({**plain.stored()[0], "value": "21.5"})


def test_schema_target_compares_with_the_same_case_without_schema() -> None:
    from bench.report import check_targets

    def row(kind: str, events_per_second: float) -> dict:
        return {"case": f"{kind}-c16-w1", "kind": kind, "workers": 1, "connections": 16,
                "events_per_second": events_per_second, "peak_rss_mb_per_worker": [50.0]}

    run = {"cases": [row("ndjson100", 10_000.0), row("ndjson100-schema", 8_000.0)]}
    (target,) = [t for t in check_targets(run) if "schema" in t["target"]]
    assert target["met"] is True and target["measured"].startswith("0.80")
    run["cases"][1]["events_per_second"] = 7_000.0
    (target,) = [t for t in check_targets(run) if "schema" in t["target"]]
    assert target["met"] is False


def test_two_worker_target_needs_the_issues_speedup_for_each_kind() -> None:
    from bench.report import TARGETS, check_targets

    def row(kind: str, workers: int, events_per_second: float) -> dict:
        return {"case": f"{kind}-c64-w{workers}", "kind": kind, "workers": workers,
                "connections": 64, "events_per_second": events_per_second,
                "requests_per_second": events_per_second, "floor_ratio": 0.5,
                "p99_ms": 10.0, "peak_rss_mb_per_worker": [50.0]}

    run = {"cases": [row("single", 1, 1_000.0), row("single", 2, 1_200.0),
                     row("ndjson100", 1, 1_000.0), row("ndjson100", 2, 1_400.0)]}
    verdicts = {t["target"].split(",")[0]: t for t in check_targets(run)
                if "2 workers" in t["target"]}
    assert TARGETS["two_workers_speedup"] == 1.3
    assert verdicts["single"]["met"] is False  # faster than 1 worker, but only 1.2x
    assert verdicts["single"]["measured"].startswith("1.20x")
    assert verdicts["ndjson100"]["met"] is True


def test_profile_summary_counts_each_sample_once_for_its_innermost_part() -> None:
    from bench.profile import summarize

    app = "Runner.run (x.py:1);FastAPI.__call__ (fastapi/applications.py:1)"
    raw = "\n".join([
        f"{app};AccessLog.__call__ (a.py:1);Logger.info (logging/__init__.py:1) 6",
        f"{app};ingest (ingest.py:1);encode_events (leitstand/decode.py:1) 3",
        f"{app};Router.__call__ (starlette/routing.py:1) 1",
        "Runner.run (x.py:1) 10",
    ])
    text = summarize(raw)
    assert text.startswith("20 samples, 10 inside the app (50%)")
    assert "60.0%  logging (access log line)" in text
    assert "30.0%  decode" in text
    assert "10.0%  routing, exception middleware" in text


def test_verify_file_reads_the_rotated_segments_too(tmp_path: Path) -> None:
    """With rotation (ndjson100-rotate) the batches are spread over compressed segments, a raw
    segment (and its compressed copy, left by a stop mid-compression) and the active file."""
    import zstandard

    kind = cases.KINDS["ndjson100-rotate"]
    assert kind.env == cases.ROTATE_ENV
    batch = b"".join(orjson.dumps(e) + b"\n" for e in kind.stored())
    archive = tmp_path / "archive" / cases.DOMAIN
    archive.mkdir(parents=True)
    packed = zstandard.ZstdCompressor().compress(batch)
    (archive / "20261203T080000Z-00000001.jsonl.zst").write_bytes(packed)
    (archive / "20261203T080001Z-00000002.jsonl").write_bytes(batch * 2)
    (archive / "20261203T080001Z-00000002.jsonl.zst").write_bytes(packed)  # raw wins
    path = tmp_path / f"{cases.DOMAIN}.jsonl"
    path.write_bytes(batch)
    assert cases.verify_file(path, kind) == cases.Stored(4, 400)
