"""`make bench-peers`: leitstand next to a real peer, Benthos, under the same wrk load.

    python -m bench.peers_bench [--seconds 10] [--repeat 3] [--connections 64]

The peer is Benthos core v4.60.0 (bench/peers/benthos: its `http_server` input feeding its
`file` output, built by bench/peers/build.sh). The cases, bodies, wrk script and file check are
the ones `make bench` uses; each repeat runs leitstand durable (LEITSTAND_FSYNC=always),
leitstand with LEITSTAND_FSYNC=off and Benthos back to back, so all three see the same machine.
Writes bench/peers.md (a section of docs/benchmarks.md) and bench/peers-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from testing import ROOT, ChildProcess, free_port

from . import cases, machine, report
from .run import BENCH, RESULTS, leitstand_env, measure, median_of
from .server import Server

PEERS = BENCH / "peers"
BINARY = PEERS / "bin" / "benthos-peer"
CONFIG = PEERS / "benthos" / "config.yaml"
SYSTEMS = ("leitstand", "leitstand-fsync-off", "benthos")


class Benthos(ChildProcess):
    """The Benthos peer on a free loopback port, writing `<data_dir>/<domain>.jsonl`; stopped
    by its PID."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Benthos:
        env = {**os.environ, "PEER_ADDRESS": f"127.0.0.1:{self.port}",
               "PEER_DIR": str(self.data_dir)}
        self.spawn([str(BINARY), "-c", str(CONFIG)], env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"benthos exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError("benthos did not listen within 30 s")

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=20)

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid]

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return machine.cpu_seconds(self.proc.pid)


def server_for(system: str, data_dir: Path, log_path: Path) -> Any:
    if system == "benthos":
        return Benthos(data_dir, log_path)
    env = leitstand_env(data_dir)
    if system == "leitstand-fsync-off":
        env["LEITSTAND_FSYNC"] = "off"
    return Server("app:app", workers=1, log_path=log_path, env=env)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    stamp = datetime.now(timezone.utc)
    work = RESULTS / f"peers-{stamp:%Y%m%dT%H%M%SZ}"
    work.mkdir(parents=True)
    info: dict[str, Any] = {
        "started": stamp.isoformat(timespec="seconds"),
        "load_average_start": machine.load_average(), "machine": machine.describe(work),
        "commit": machine.git_commit(ROOT),
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "repeat": args.repeat,
                     "connections": args.connections, "workers": 1, "wrk_threads": 2},
    }
    print(f"peers benchmark {info['started']}, load average {info['load_average_start']}",
          flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(args.repeat):
        for kind_name in args.kinds:
            kind = cases.KINDS[kind_name]
            for system in SYSTEMS:
                name = f"{system}-{kind.name}-c{args.connections}"
                case_dir = work / f"{name}-{repeat}"
                data_dir = case_dir / "data"
                data_dir.mkdir(parents=True)
                server = server_for(system, data_dir, case_dir / "server.log")
                row = measure(server, kind, args.connections, args.seconds, args.warmup,
                              data_dir, case_dir / "body")
                row.update(case=name, system=system, workers=1)
                runs.setdefault(name, []).append(row)
                print(report.case_line(row), flush=True)
    info["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info["load_average_end"] = machine.load_average()
    info["cases"] = [median_of(r) for r in runs.values()]
    return info


def markdown(run: dict[str, Any]) -> str:
    s = run["settings"]
    lines = [
        "## Peer: Benthos (bench/peers_bench.py)",
        "",
        f"Run {run['started']} to {run['finished']} (UTC), commit `{run['commit']}`, "
        f"`python -m bench.peers_bench --seconds {s['seconds']:.0f} --repeat {s['repeat']} "
        f"--connections {s['connections']}` (the median run per case; `all runs` lists every "
        f"run's req/s); load average at the start "
        f"{' / '.join(f'{x:.2f}' for x in run['load_average_start'])}, at the end "
        f"{' / '.join(f'{x:.2f}' for x in run['load_average_end'])}. One process each, the "
        "same wrk script, bodies and file check as the cases above, on the same 2 cores.",
        "",
        "What each side promises when it answers:",
        "",
        "- `leitstand`: `LEITSTAND_FSYNC=always` (the default): the lines are written and "
        "`fdatasync`ed (group commit) before the 202; X-Auth checked, per-IP rate limit, "
        "access log line, metrics, every event validated as JSON.",
        "- `leitstand-fsync-off`: the same, but the answer comes after `write()`; a power loss "
        "can lose acknowledged events (a process crash cannot).",
        "- `benthos`: Benthos core v4.60.0, `http_server` input → `unarchive` (lines) → "
        "`mapping` (sets `domain`) → `file` output (bench/peers/benthos/config.yaml). The 200 "
        "comes after the file output's `write()`; Benthos' file output never fsyncs, so this "
        "is the `fsync off` promise at best. No auth, no rate limit, no access log; invalid "
        "JSON is passed through to the file with an error logged, not rejected.",
        "",
        "| case | req/s | events/s | all runs | p50 ms | p99 ms | server CPU | CPU/req | "
        "peak RSS | file check |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in run["cases"]:
        check = "ok" if row["verified"] else f"FAILED: {row['problem']}"
        lines.append(
            f"| {row['case']} | {row['requests_per_second']:,.0f} | "
            f"{row['events_per_second']:,.0f} | "
            f"{', '.join(f'{x:,.0f}' for x in row['runs_requests_per_second'])} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['server_cpu_percent']:.0f}% | "
            f"{report.cpu_per_request(row):,.0f} us | "
            f"{max(row['peak_rss_mb_per_worker'], default=0):.0f} MB | {check} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="load per case (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per case (2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; median shown")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--kinds", nargs="+", choices=["single", "ndjson100", "ndjson1000"],
                        default=["single", "ndjson100", "ndjson1000"])
    parser.add_argument("--no-doc", action="store_true",
                        help="do not rewrite bench/peers.md and docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not BINARY.exists():
        print("bench/peers/bin/benthos-peer is missing: run bench/peers/build.sh "
              "(`make bench-peers` does)", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    outcome = benchmark(args)
    name = f"peers-{outcome['started'].replace(':', '')}.json"
    (RESULTS / name).write_text(json.dumps(outcome, indent=2))
    text = markdown(outcome)
    print()
    print(text)
    if not args.no_doc:
        (BENCH / "peers-latest.json").write_text(json.dumps(outcome, indent=2) + "\n")
        (BENCH / "peers.md").write_text(text)
        report.write_doc(BENCH)
        print("written: bench/peers.md, bench/peers-latest.json, docs/benchmarks.md")
    return 0 if all(r["verified"] for r in outcome["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
