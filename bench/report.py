"""Tables, the target check, docs/benchmarks.md and docs/benchmarks.png from a run's results."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
TARGETS = {
    "single_vs_http_floor": 0.30,
    "single_p99_ms": 15.0,
    "ndjson100_vs_disk_floor": 0.75,
    "ndjson1000_vs_disk_floor": 0.90,
    "two_workers_speedup": 1.3,  # single events and ndjson100
    "peak_rss_mb": 100.0,
    "soak_growth": 0.10,
    "schema_ndjson100_kept": 0.75,  # with a 10-property schema: at most 25% fewer events/s
    "rotate_ndjson100_kept": 0.90,  # rotation with zstd on: at most 10% fewer events/s
}


def floor_line(floor: dict[str, Any]) -> str:
    return (f"{floor['case']:<24} {floor['requests_per_second']:>10,.0f} req/s  "
            f"p50 {floor['p50_ms']:6.1f} ms  p99 {floor['p99_ms']:6.1f} ms  "
            f"cpu {floor['server_cpu_percent']:4.0f}%")


def case_line(row: dict[str, Any]) -> str:
    check = "ok" if row["verified"] else f"FAILED: {row['problem']}"
    return (f"{row['case']:<24} {row['requests_per_second']:>10,.0f} req/s "
            f"{row['events_per_second']:>10,.0f} ev/s  p50 {row['p50_ms']:6.1f} ms  "
            f"p99 {row['p99_ms']:6.1f} ms  cpu {row['server_cpu_percent']:4.0f}% = "
            f"{cpu_per_request(row):5.0f} us/req  "
            f"rss {max(row['peak_rss_mb_per_worker'], default=0):5.1f} MB  file {check}")


def cpu_per_request(row: dict[str, Any]) -> float:
    """Server CPU time per answered request, in microseconds: less noisy than throughput on a
    shared machine, because it does not depend on how much CPU the server was given."""
    rps = row["requests_per_second"]
    return row["server_cpu_percent"] / 100 / rps * 1e6 if rps else 0.0


_COLUMNS = ["case", "workers", "conns", "req/s", "events/s", "p50 ms", "p99 ms", "server CPU",
            "CPU/req", "peak RSS/worker", "vs floor", "req/group", "file check"]


def _cells(row: dict[str, Any]) -> list[str]:
    groups = row.get("commit_groups") or {}
    mean_group = groups.get("mean_requests_per_group")
    return [
        row["kind"] + ("" if row.get("server", "uvicorn") == "uvicorn" else f" ({row['server']})"),
        str(row["workers"]), str(row["connections"]),
        f"{row['requests_per_second']:,.0f}", f"{row['events_per_second']:,.0f}",
        f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['server_cpu_percent']:.0f}%",
        f"{cpu_per_request(row):,.0f} us",
        f"{max(row['peak_rss_mb_per_worker'], default=0):.0f} MB",
        f"{row['floor_ratio']:.2f} ({row['floor']})",
        f"{mean_group:.1f}" if mean_group else "-",
        "exact" if row["verified"] else f"FAILED: {row['problem']}",
    ]


def _floor_rows(run: dict[str, Any]) -> list[list[str]]:
    rows = []
    for floor in sorted(run["http_floors"].values(),
                        key=lambda f: (f["workers"], f["connections"])):
        rows.append(["HTTP floor", str(floor["workers"]), str(floor["connections"]),
                     f"{floor['requests_per_second']:,.0f}", "-", f"{floor['p50_ms']:.1f}",
                     f"{floor['p99_ms']:.1f}", f"{floor['server_cpu_percent']:.0f}%",
                     f"{cpu_per_request(floor):,.0f} us", "-", "1.00", "-", "-"])
    disk = run["disk_floor_lines_per_second"]
    syncs = sum(d["syncs_per_second"] for d in run["disk_floor_runs"]) / len(
        run["disk_floor_runs"])
    rows.append(["disk floor", "-", "-", f"{syncs:,.0f} fsync/s", f"{disk:,.0f}", "-", "-",
                 "-", "-", "-", "1.00", "100 lines", "-"])
    return rows


def _ordered(run: dict[str, Any]) -> list[dict[str, Any]]:
    order = {"single": 0, "legacy": 1, "ndjson100": 2, "ndjson1000": 3, "single-schema": 4,
             "ndjson100-schema": 5, "ndjson100-rotate": 6}
    return sorted(run["cases"], key=lambda r: (order.get(r["kind"], 9), r["workers"],
                                               r["connections"]))


def text_table(run: dict[str, Any]) -> str:
    rows = [_cells(r) for r in _ordered(run)] + _floor_rows(run)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    out = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def markdown_table(run: dict[str, Any]) -> str:
    rows = [_cells(r) for r in _ordered(run)] + _floor_rows(run)
    out = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def pair_http_ratios(run: dict[str, Any]) -> None:
    """Single-event and legacy cases: the ratio to the HTTP floor measured just before them in
    the same repeat, per repeat, and their median as `floor_ratio` (runs are listed in order)."""
    for row in run["cases"]:
        if row.get("floor") != "http":
            continue
        floor = run["http_floors"][f"c{row['connections']}-w{row['workers']}"]
        pairs = zip(row.get("runs_requests_per_second", []),
                    floor.get("runs_requests_per_second", []), strict=False)
        ratios = [rps / floor_rps for rps, floor_rps in pairs if floor_rps]
        if ratios:
            row["floor_ratio_runs"] = [round(r, 3) for r in ratios]
            row["floor_ratio"] = statistics.median(ratios)


def _case(run: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in run["cases"] if r["case"] == name), None)


def check_targets(run: dict[str, Any], soak: dict[str, Any] | None = None) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met."""
    out: list[dict[str, Any]] = []

    def target(name: str, measured: str, met: bool | None) -> None:
        out.append({"target": name, "measured": measured, "met": met})

    single = _case(run, "single-c64-w1")
    if single:
        target(f"single events, 64 conns, 1 worker: >= {TARGETS['single_vs_http_floor']:.2f} "
               "of the HTTP floor",
               f"{single['floor_ratio']:.2f} ({single['requests_per_second']:,.0f} req/s)",
               single["floor_ratio"] >= TARGETS["single_vs_http_floor"])
        target(f"single events, 64 conns, 1 worker: p99 <= {TARGETS['single_p99_ms']:.0f} ms",
               f"{single['p99_ms']:.1f} ms",
               single["p99_ms"] <= TARGETS["single_p99_ms"])
    for kind, events in (("ndjson100", 100), ("ndjson1000", 1000)):
        ndjson = _case(run, f"{kind}-c64-w1")
        goal = TARGETS[f"{kind}_vs_disk_floor"]
        if ndjson:
            target(f"{events}-event NDJSON, 64 conns, 1 worker: >= {goal:.2f} of the disk floor",
                   f"{ndjson['floor_ratio']:.2f} ({ndjson['events_per_second']:,.0f} events/s)",
                   ndjson["floor_ratio"] >= goal)
    speedup = TARGETS["two_workers_speedup"]
    for kind in ("single", "ndjson100"):
        one, two = _case(run, f"{kind}-c64-w1"), _case(run, f"{kind}-c64-w2")
        if one and two and one["events_per_second"]:
            ratio = two["events_per_second"] / one["events_per_second"]
            target(f"{kind}, 64 conns: 2 workers >= {speedup:.1f}x one worker",
                   f"{ratio:.2f}x ({two['events_per_second']:,.0f} vs "
                   f"{one['events_per_second']:,.0f} events/s)",
                   ratio >= speedup)
    kept_targets = {  # a case with one feature on, against ndjson100 in the same run
        "ndjson100-schema": ("with a 10-property schema", TARGETS["schema_ndjson100_kept"]),
        "ndjson100-rotate": ("with rotation (4 MiB) and zstd", TARGETS["rotate_ndjson100_kept"]),
    }
    for kind, (feature, goal) in kept_targets.items():
        for row in (r for r in run["cases"] if r["kind"] == kind):
            plain = _case(run, row["case"].replace(kind, "ndjson100", 1))
            if plain and plain["events_per_second"]:
                kept = row["events_per_second"] / plain["events_per_second"]
                target(f"100-event NDJSON {feature}, {row['connections']} conns, "
                       f"{row['workers']} worker(s): >= {goal:.2f} of the events/s without",
                       f"{kept:.2f} ({row['events_per_second']:,.0f} vs "
                       f"{plain['events_per_second']:,.0f} events/s)",
                       kept >= goal)
    peak = max((max(r["peak_rss_mb_per_worker"], default=0) for r in run["cases"]), default=0)
    target(f"peak RSS per worker <= {TARGETS['peak_rss_mb']:.0f} MB (all cases)",
           f"{peak:.0f} MB",
           peak <= TARGETS["peak_rss_mb"])
    if soak:
        target(f"RSS after {soak['minutes']} min within 10% of after 1 min",
               f"{soak['rss_mb_after_1_min']:.0f} -> {soak['rss_mb_after_n_min']:.0f} MB "
               f"({soak['growth_ratio'] - 1:+.1%})", soak["within_10_percent"])
    return out


def targets_text(targets: list[dict[str, Any]]) -> str:
    return "\n".join(f"[{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['measured']}"
                     for t in targets)


def soak_text(soak: dict[str, Any]) -> str:
    return (f"soak {soak['kind']} {soak['minutes']} min: {soak['requests_per_second']:,.0f} "
            f"req/s, RSS {soak['rss_mb_after_1_min']} MB after 1 min -> "
            f"{soak['rss_mb_after_n_min']} MB after {soak['minutes']} min "
            f"({soak['growth_ratio'] - 1:+.1%}), file {'exact' if soak['verified'] else 'FAILED'}")


def chart(run: dict[str, Any], path: Path) -> None:
    """Events/s by case (log scale), with the floors as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _ordered(run)
    colors = {"single": "#1f77b4", "legacy": "#9467bd", "ndjson100": "#2ca02c",
              "ndjson1000": "#ff7f0e", "single-schema": "#17becf",
              "ndjson100-schema": "#bcbd22"}
    labels = [f"{r['kind']}  c{r['connections']} w{r['workers']}" for r in rows]
    values = [r["events_per_second"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.8), dpi=110)
    ax.barh(range(len(rows)), values, color=[colors.get(r["kind"], "grey") for r in rows])
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        ax.text(value * 1.05, i, f"{value:,.0f}  ({row['floor_ratio']:.2f} of {row['floor']} "
                "floor)", va="center", fontsize=8)
    ax.axvline(run["disk_floor_lines_per_second"], color="black", linestyle="--", linewidth=1)
    ax.text(run["disk_floor_lines_per_second"], len(rows) - 0.4, " disk floor", fontsize=8)
    http = max(f["requests_per_second"] for f in run["http_floors"].values())
    ax.axvline(http, color="grey", linestyle=":", linewidth=1)
    ax.text(http, len(rows) - 0.4, " best HTTP floor", fontsize=8, color="grey")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(min([*values, http]) / 2, max([*values, run["disk_floor_lines_per_second"]]) * 8)
    ax.set_xlabel("events stored per second (durable: fdatasync before every answer), log scale")
    ax.set_title(f"leitstand events/s by case ({run['started']}, "
                 f"load avg {run['load_average_start'][0]:.2f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_doc(bench: Path) -> None:
    """docs/benchmarks.md (+ .png) from bench/latest.json, bench/latest-soak.json and the
    hand-written analysis in bench/notes.md."""
    run = json.loads((bench / "latest.json").read_text())
    soak_path = bench / "latest-soak.json"
    soak = json.loads(soak_path.read_text()) if soak_path.exists() else None
    pair_http_ratios(run)
    run["targets"] = check_targets(run, soak)
    chart(run, DOCS / "benchmarks.png")
    m = run["machine"]
    s = run["settings"]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (bench/report.py) from bench/latest.json,",
        "     bench/latest-soak.json and bench/notes.md. Edit bench/notes.md, not this file. -->",
        "",
        f"Latest run: {run['started']} to {run['finished']} (UTC), commit "
        f"`{run.get('commit', 'unknown')}`. "
        f"Load average at the start: {' / '.join(f'{x:.2f}' for x in run['load_average_start'])}"
        f" (1/5/15 min), at the end: "
        f"{' / '.join(f'{x:.2f}' for x in run['load_average_end'])}.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores; {m['memory_gib']} GiB RAM",
        f"- Kernel {m['kernel']}, Python {m['python']}",
        f"- Data dir on `{m['data_dir_device']}` ({m['data_dir_fs']}, "
        f"`{m['data_dir_mount_options']}`); the disk floor ran in the same directory",
        "- wrk on the same machine as the server (2 threads), sharing the 2 cores with it "
        "and with other people's work on the machine (see the load average).",
        "",
        "## Settings",
        "",
        f"- {s['seconds']:.0f} s of load per case after a {s['warmup']:.0f} s warm-up (to "
        f"another domain), {s['repeat']} run(s) per case (the median run is shown).",
        "- Server started as the README says: `uvicorn app:app --workers N --no-access-log` "
        "(leitstand's own access log stays on, at the default `LOG_LEVEL=INFO`), fresh data dir "
        "per case, `LEITSTAND_FSYNC=always` (every answer waits for `fdatasync`).",
        f"- `LEITSTAND_RATE_LIMIT={s['rate_limit']}`: the limiter runs on every request but never "
        "rejects one; the default `60/minute` would cap the benchmark at one request per second.",
        "- `vs floor`: single-event and legacy cases against the HTTP floor (a bare ASGI app on "
        "the same uvicorn, same wrk settings, same workers and connections, measured in this "
        "run); NDJSON cases against the disk floor (a plain Python loop of `write()` + "
        "`fdatasync()` per 100 lines, same directory, mean of a run before and after the cases).",
        "- With several runs per case, `vs floor` for single-event and legacy cases is the "
        "median of the per-run ratios (each run against the HTTP floor measured just before it).",
        "- `file check`: after each case the data file must hold only whole, correct batches, "
        "and their number must be at least the 2xx answers wrk counted and at most that plus "
        "the connections (one request per connection may have been in flight when wrk stopped).",
        "- `req/group`: mean requests per group commit (one write + one fdatasync), from "
        "`leitstand_commit_group_requests` in /metrics (with 2 workers: one worker's view).",
        "",
        "## Results",
        "",
        markdown_table(run),
        "",
        "![events/s by case](benchmarks.png)",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in run["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    if soak:
        lines += ["", f"Soak ({soak['started']}, load average {soak['load_average_start'][0]:.2f}):"
                  f" {soak_text(soak)}."]
    else:
        lines += ["", "No soak run recorded yet (`make bench-soak`)."]
    notes = bench / "notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    nats = bench / "nats.md"  # written by bench/nats_bench.py (the nats backend's section)
    if nats.exists():
        lines += ["", "<!-- nats-bench:begin -->", nats.read_text().rstrip(),
                  "<!-- nats-bench:end -->"]
    peers = bench / "peers.md"  # written by bench/peers_bench.py (leitstand next to Benthos)
    if peers.exists():
        lines += ["", "<!-- peers-bench:begin -->", peers.read_text().rstrip(),
                  "<!-- peers-bench:end -->"]
    (DOCS / "benchmarks.md").write_text("\n".join(lines) + "\n")
