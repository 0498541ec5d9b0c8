"""`make bench`: leitstand (durable) under wrk next to the HTTP and disk floors, in one run.

    python -m bench.run [--seconds 10] [--repeat 1] [--soak]

Every case starts the real server as the README does (`uvicorn app:app`, LEITSTAND_FSYNC=always,
a fresh data dir), drives it with wrk, then checks that the file holds exactly the acknowledged
events. Results go to bench/results/<time>.json and bench/latest.json; docs/benchmarks.md and
docs/benchmarks.png are rewritten from them.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from . import cases, machine, report, wrk
from .floors import disk_floor
from .server import RATE_LIMIT, ROOT, SERVERS, Server

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
TOKEN = "bench-token"


def leitstand_env(data_dir: Path) -> dict[str, str]:
    return {
        "LEITSTAND_TOKEN": TOKEN,
        "LEITSTAND_DATA_DIR": str(data_dir),
        "LEITSTAND_FSYNC": "always",
        "LEITSTAND_RATE_LIMIT": RATE_LIMIT,
    }


def wait_quiet(path: Path, timeout: float = 30.0) -> None:
    """Wait until requests still in flight when wrk stopped have landed (size stable)."""
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size != last:
            last, stable_since = size, time.monotonic()
        elif time.monotonic() - stable_since >= 0.5:
            return
        time.sleep(0.1)


def scrape_group_size(url: str) -> dict[str, float] | None:
    """Mean requests per commit group (one worker's view) from /metrics."""
    try:
        text = httpx.get(url + "/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return None
    values = dict(re.findall(r"^leitstand_commit_group_requests_(sum|count) (\S+)$", text, re.M))
    if "count" not in values or float(values["count"]) == 0:
        return None
    count, total = float(values["count"]), float(values["sum"])
    return {"groups": count, "mean_requests_per_group": total / count}


def drive(server: Server, kind: cases.Kind, connections: int, seconds: float,
          body: Path, domain: str = cases.DOMAIN) -> tuple[wrk.WrkResult, float]:
    """Run wrk against `server`; returns its result and the server's CPU seconds meanwhile."""
    cpu_before = server.cpu_seconds()
    result = wrk.run(server.url + kind.path(domain), body=body, content_type=kind.content_type,
                     token=TOKEN, connections=connections, seconds=seconds)
    return result, server.cpu_seconds() - cpu_before


def run_case(work: Path, kind: cases.Kind, workers: int, connections: int,
             seconds: float, warmup: float, target: str = "app:app",
             server_name: str = "uvicorn") -> dict[str, Any]:
    name = f"{kind.name}-c{connections}-w{workers}"
    if server_name != "uvicorn":  # the README's way keeps the plain names (and the targets)
        name += f"-{server_name}"
    data_dir = work / name / "data"
    data_dir.mkdir(parents=True)
    env = {**leitstand_env(data_dir), **(kind.env or {})}
    if kind.schema is not None:
        schema_dir = work / name / "schemas"
        schema_dir.mkdir(exist_ok=True)  # the same case again with --repeat
        (schema_dir / cases.SCHEMA_FILE).write_text(json.dumps(kind.schema))
        env["LEITSTAND_SCHEMA_DIR"] = str(schema_dir)
    server = SERVERS[server_name](target, workers=workers, log_path=work / name / "server.log",
                                  env=env)
    row = measure(server, kind, connections, seconds, warmup, data_dir, work / name / "body")
    return {"case": name, "workers": workers, "server": server_name, **row}


def measure(server: Any, kind: cases.Kind, connections: int, seconds: float, warmup: float,
            data_dir: Path, body: Path) -> dict[str, Any]:
    """Start `server` (leitstand's or a peer's: anything with start/stop, url, cpu_seconds and
    worker_pids), warm it up on another domain, drive it, then check that its file for the bench
    domain in `data_dir` holds exactly the acknowledged events; the data dir is removed after."""
    body.write_bytes(kind.body())
    load = machine.load_average()
    with server:
        if warmup:
            drive(server, kind, connections, warmup, body, domain="warmup")
        data_file = data_dir / f"{cases.DOMAIN}.jsonl"
        result, cpu = drive(server, kind, connections, seconds, body)
        wait_quiet(data_file)
        groups = scrape_group_size(server.url)
        memory = [machine.memory_kib(pid) for pid in server.worker_pids()]
    problem: str | None
    try:
        stored = cases.verify_file(data_file, kind)
        socket_errors = sum(v for k, v in result.errors.items() if k != "status")
        problem = cases.check_acknowledged(stored.requests, result.ok, result.non_ok,
                                           connections, socket_errors)
    except cases.VerifyError as exc:
        stored, problem = cases.Stored(-1, -1), str(exc)
    shutil.rmtree(data_dir)
    return {
        "kind": kind.name, "connections": connections,
        "events_per_request": kind.per_request, "seconds": result.seconds,
        "requests_per_second": result.ok_per_second,
        "events_per_second": result.ok_per_second * kind.per_request,
        "p50_ms": result.p50_ms, "p90_ms": result.p90_ms, "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "server_cpu_percent": 100 * cpu / result.seconds if result.seconds else 0.0,
        "peak_rss_mb_per_worker": [round(m["peak"] * 1024 / 1e6, 1) for m in memory],
        "acknowledged_requests": result.ok, "stored_requests": stored.requests,
        "wrk_errors": result.errors, "commit_groups": groups,
        "verified": problem is None, "problem": problem, "load_average_before": load,
    }


def run_http_floor(work: Path, workers: int, connections: int, seconds: float,
                   warmup: float) -> dict[str, Any]:
    kind = cases.KINDS["single"]
    body = work / "floor-body"
    body.write_bytes(kind.body())
    load = machine.load_average()
    server = Server("bench.floor_app:app", workers=workers,
                    log_path=work / f"floor-c{connections}-w{workers}.log")
    with server:
        if warmup:
            drive(server, kind, connections, warmup, body)
        result, cpu = drive(server, kind, connections, seconds, body)
    return {
        "case": f"http-floor-c{connections}-w{workers}", "workers": workers,
        "connections": connections, "requests_per_second": result.ok_per_second,
        "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
        "server_cpu_percent": 100 * cpu / result.seconds if result.seconds else 0.0,
        "non_ok": result.non_ok, "load_average_before": load,
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per case: the run with the median throughput (so its numbers belong together),
    plus every run's throughput."""
    ranked = sorted(runs, key=lambda r: r["requests_per_second"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["runs_requests_per_second"] = [round(r["requests_per_second"], 1) for r in runs]
    if "verified" in chosen:
        chosen["verified"] = all(r["verified"] for r in runs)
        chosen["problem"] = next((r["problem"] for r in runs if r["problem"]), None)
    return chosen


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    stamp = datetime.now(timezone.utc)
    work = RESULTS / f"work-{stamp:%Y%m%dT%H%M%SZ}"
    work.mkdir(parents=True)
    kinds = [cases.KINDS[k] for k in args.kinds]
    info = {"started": stamp.isoformat(timespec="seconds"), "load_average_start":
            machine.load_average(), "machine": machine.describe(work),
            "commit": machine.git_commit(ROOT),
            "settings": {"seconds": args.seconds, "warmup": args.warmup, "repeat": args.repeat,
                         "wrk_threads": 2, "fsync": "always", "rate_limit": RATE_LIMIT}}
    print(f"leitstand benchmark {info['started']}, load average {info['load_average_start']}",
          flush=True)
    stored_line = cases.KINDS["ndjson100"].stored()[0]
    line = json.dumps(stored_line, separators=(",", ":")).encode() + b"\n"
    disk = [disk_floor(work, line, seconds=args.disk_seconds)]
    print(f"disk floor: {disk[0]['lines_per_second']:,.0f} lines/s", flush=True)
    floor_runs: dict[tuple[int, int], list[dict[str, Any]]] = {}
    case_runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for workers in args.workers:
            for connections in args.connections:
                floor = run_http_floor(work, workers, connections, args.seconds, args.warmup)
                floor_runs.setdefault((workers, connections), []).append(floor)
                print(report.floor_line(floor), flush=True)
                for kind in kinds:
                    for server_name in args.server:
                        row = run_case(work, kind, workers, connections, args.seconds,
                                       args.warmup, args.target, server_name)
                        case_runs.setdefault(row["case"], []).append(row)
                        print(report.case_line(row), flush=True)
    disk.append(disk_floor(work, line, seconds=args.disk_seconds))
    print(f"disk floor (again): {disk[1]['lines_per_second']:,.0f} lines/s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    http_floors = {f"c{c}-w{w}": median_of(runs) for (w, c), runs in floor_runs.items()}
    disk_lines = statistics.mean(d["lines_per_second"] for d in disk)
    rows = [median_of(runs) for runs in case_runs.values()]
    for row in rows:
        if row["events_per_request"] == 1:  # single, legacy, single-schema
            floor_rps = http_floors[f"c{row['connections']}-w{row['workers']}"]
            row["floor"] = "http"
            row["floor_ratio"] = row["requests_per_second"] / floor_rps["requests_per_second"]
        else:
            row["floor"] = "disk"
            row["floor_ratio"] = row["events_per_second"] / disk_lines
    report.pair_http_ratios({"cases": rows, "http_floors": http_floors})
    info.update({
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_end": machine.load_average(),
        "disk_floor_runs": disk, "disk_floor_lines_per_second": disk_lines,
        "http_floors": http_floors, "cases": rows,
    })
    info["targets"] = report.check_targets(info)
    return info


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """RSS of one worker under steady single-event load: after 1 minute vs after N minutes."""
    stamp = datetime.now(timezone.utc)
    work = RESULTS / f"soak-{stamp:%Y%m%dT%H%M%SZ}"
    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    kind = cases.KINDS[args.soak_kind]
    body = work / "body"
    body.write_bytes(kind.body())
    seconds = args.soak_minutes * 60 + 15
    samples: list[tuple[float, int]] = []
    load = machine.load_average()
    commit = machine.git_commit(ROOT)
    print(f"soak: {kind.name}, 64 connections, 1 worker, {seconds:.0f} s, load {load}",
          flush=True)
    server = Server("app:app", workers=1, log_path=work / "server.log",
                    env=leitstand_env(data_dir))
    with server:
        pid = server.worker_pids()[0]
        outcome: dict[str, Any] = {}
        loader = threading.Thread(target=lambda: outcome.update(
            result=drive(server, kind, 64, seconds, body)))
        started = time.monotonic()
        loader.start()
        while loader.is_alive():
            samples.append((time.monotonic() - started, machine.memory_kib(pid)["rss"]))
            loader.join(timeout=5.0)
        result, _ = outcome["result"]
        wait_quiet(data_dir / f"{cases.DOMAIN}.jsonl")
        peak = machine.memory_kib(pid)["peak"]
    stored = cases.verify_file(data_dir / f"{cases.DOMAIN}.jsonl", kind)
    problem = cases.check_acknowledged(stored.requests, result.ok, result.non_ok, 64,
                                       sum(v for k, v in result.errors.items() if k != "status"))
    shutil.rmtree(work, ignore_errors=True)

    def rss_at(t: float) -> float:
        return min(samples, key=lambda s: abs(s[0] - t))[1] * 1024 / 1e6

    at_1, at_n = rss_at(60), rss_at(args.soak_minutes * 60)
    return {
        "started": stamp.isoformat(timespec="seconds"), "load_average_start": load,
        "machine": machine.describe(ROOT), "commit": commit, "kind": kind.name,
        "connections": 64, "workers": 1,
        "minutes": args.soak_minutes, "requests_per_second": result.ok_per_second,
        "p99_ms": result.p99_ms, "rss_mb_after_1_min": round(at_1, 1),
        "rss_mb_after_n_min": round(at_n, 1),
        "growth_ratio": at_n / at_1, "within_10_percent": abs(at_n / at_1 - 1) <= 0.10,
        "peak_rss_mb": round(peak * 1024 / 1e6, 1), "verified": problem is None,
        "problem": problem,
        "rss_samples_mb": [(round(t, 1), round(kib * 1024 / 1e6, 1)) for t, kib in samples],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="load per case (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per case (2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; median shown")
    parser.add_argument("--disk-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--kinds", nargs="+", choices=sorted(cases.KINDS),
                        default=list(cases.KINDS))
    parser.add_argument("--target", default="app:app",
                        help="the ASGI app uvicorn serves (to compare variants while profiling)")
    parser.add_argument("--server", nargs="+", choices=sorted(SERVERS), default=["uvicorn"],
                        help="the ASGI server(s) each case runs under, in the same run "
                        "(uvicorn, as the README starts it; granian: cases named ...-granian)")
    parser.add_argument("--no-doc", action="store_true",
                        help="do not rewrite bench/latest.json and docs/benchmarks.*")
    parser.add_argument("--soak", action="store_true",
                        help="instead: RSS under load after 1 minute vs after --soak-minutes")
    parser.add_argument("--soak-minutes", type=int, default=5)
    parser.add_argument("--soak-kind", choices=sorted(cases.KINDS), default="single")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    if args.soak:
        outcome = soak(args)
        name = f"soak-{outcome['started'].replace(':', '')}.json"
        (RESULTS / name).write_text(json.dumps(outcome, indent=2))
        print(report.soak_text(outcome))
        if not args.no_doc:
            (BENCH / "latest-soak.json").write_text(json.dumps(outcome, indent=2) + "\n")
            report.write_doc(BENCH)
        return 0 if outcome["verified"] else 1
    outcome = benchmark(args)
    name = f"{outcome['started'].replace(':', '')}.json"
    (RESULTS / name).write_text(json.dumps(outcome, indent=2))
    print()
    print(report.text_table(outcome))
    print(report.targets_text(outcome["targets"]))
    print(f"\nwritten: bench/results/{name}")
    if not args.no_doc:
        (BENCH / "latest.json").write_text(json.dumps(outcome, indent=2) + "\n")
        report.write_doc(BENCH)
        print("written: bench/latest.json, docs/benchmarks.md, docs/benchmarks.png")
    return 0 if all(r["verified"] for r in outcome["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
