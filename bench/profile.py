"""Where a request's time goes: py-spy on one worker under wrk, its samples summed by part.

    python -m bench.profile single [--seconds 10] [--target app:app] [--raw prof.txt]

Starts the server as `make bench` does (durable, one worker), warms it up, records it with
`py-spy record -f raw` while wrk drives it with 64 connections, then prints the share of the
request's samples per part of the ingest path (each sample counted once, for the innermost
frame that names a part) and the busiest frames. Needs py-spy (bench/requirements.txt) and
ptrace rights over the server (the same user; Docker may need SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import cases, wrk
from .run import TOKEN, leitstand_env
from .server import Server

# Innermost match wins, so the order only matters for frames that match two patterns.
PARTS = [
    ("uvicorn: socket writes", r"RequestResponseCycle\.send"),
    ("logging (access log line)", r"^(Logger\.|Handler\.|StreamHandler|LoopBatching|Formatter|"
                                  r"SafeFormatter|LogRecord)"),
    ("metrics", r"prometheus_client|CappedLabels"),
    ("answer (Response)", r"(JSONResponse|PlainTextResponse|Response\.|render)"),
    ("decode", r"^(encode_events|_parse|_loads|_ndjson|_settle|_has_long)"),
    ("store hand-over (group commit)", r"(JsonlStore|DomainWriter|DomainFile|DataFile|"
                                       r"ThreadPoolExecutor|shield|wrap_future)"),
    ("body read + deadline", r"^(read_body|_within|Timeout|timeout|Request\.stream|receive)"),
    ("rate limit + auth", r"(guard \(|RateLimiter|Access\.|MovingWindow|MemoryStorage|limits/|"
                          r"digest_of|check_token|identify)"),
    ("access log middleware", r"^(AccessLog|request_id_from|clean)"),
    ("headers, query", r"(Headers|Request\.headers|idempotency_of|media_kind|_query_domain)"),
    ("routing, exception middleware", r"(Router\.|Route\.|APIRouter|request_response|"
                                      r"wrap_app_handling|ExceptionMiddleware|AsyncExitStack)"),
    ("outer middlewares", r"(FastAPI\.__call__|Starlette\.__call__|ServerErrorMiddleware|"
                          r"Telemetry|BodyLimit)"),
    ("ingest functions", r"^(ingest|ingest_v1|read_ingest_body|service) "),
]
_PATTERNS = [(name, re.compile(pattern)) for name, pattern in PARTS]


def summarize(raw: str, top: int = 15) -> str:
    """py-spy's raw output (`frame;frame;... count` per line) → the report text."""
    parts: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = in_requests = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        total += n
        leaves[frames[-1]] += n
        start = next((i for i, f in enumerate(frames) if f.startswith("FastAPI.__call__")), None)
        if start is None:
            continue
        in_requests += n
        for frame in reversed(frames[start:]):
            name = next((name for name, pattern in _PATTERNS if pattern.search(frame)), None)
            if name:
                parts[name] += n
                break
        else:
            parts["other"] += n
    out = [f"{total} samples, {in_requests} inside the app ({in_requests / max(total, 1):.0%});"
           " of those, by part:"]
    out += [f"  {n / max(in_requests, 1):6.1%}  {name}" for name, n in parts.most_common()]
    out.append("busiest frames (self, all samples):")
    out += [f"  {n / max(total, 1):6.1%}  {frame}" for frame, n in leaves.most_common(top)]
    return "\n".join(out)


def record(kind: cases.Kind, seconds: int, target: str, raw: Path) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    work = Path(tempfile.mkdtemp(prefix="leitstand-profile-"))
    try:
        data = work / "data"
        data.mkdir()
        body = work / "body"
        body.write_bytes(kind.body())
        server = Server(target, workers=1, log_path=work / "server.log", env=leitstand_env(data))
        with server:
            pid = server.worker_pids()[0]
            wrk.run(server.url + kind.path("warmup"), body=body, content_type=kind.content_type,
                    token=TOKEN, connections=64, seconds=2)
            with subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "250",
                                   "-f", "raw", "-o", str(raw), "--nonblocking"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as prof:
                cpu_before = server.cpu_seconds()
                result = wrk.run(server.url + kind.path(), body=body, token=TOKEN,
                                 content_type=kind.content_type, connections=64,
                                 seconds=seconds + 1)
                cpu = server.cpu_seconds() - cpu_before
                prof.wait(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return (f"{kind.name}: {result.ok_per_second:,.0f} req/s, server CPU "
            f"{cpu / max(result.ok, 1) * 1e6:.0f} us/request, p99 {result.p99_ms:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(cases.KINDS))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--target", default="app:app")
    parser.add_argument("--raw", type=Path, default=Path("prof.txt"),
                        help="py-spy's raw samples (for flamegraph.pl or speedscope)")
    args = parser.parse_args(argv)
    print(record(cases.KINDS[args.kind], args.seconds, args.target, args.raw))
    print(summarize(args.raw.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
