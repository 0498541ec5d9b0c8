"""Run wrk with bench/wrk/post.lua and read the summary line its `done()` prints."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk") / "post.lua"
_MARK = "BENCH_RESULT "


@dataclass(frozen=True)
class WrkResult:
    requests: int  # answers received (any status)
    ok: int  # 2xx answers
    non_ok: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def parse_output(text: str) -> WrkResult:
    """The result from wrk's stdout: the one `BENCH_RESULT {json}` line of post.lua's done()."""
    lines = [line for line in text.splitlines() if line.startswith(_MARK)]
    if len(lines) != 1:
        raise ValueError(f"expected one {_MARK.strip()} line in wrk's output, got {len(lines)}")
    data = json.loads(lines[0][len(_MARK):])
    latency = data["latency_us"]
    return WrkResult(
        requests=int(data["requests"]),
        ok=int(data["ok"]),
        non_ok=int(data["non_ok"]),
        seconds=data["duration_us"] / 1e6,
        errors={k: int(v) for k, v in data["errors"].items()},
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        mean_ms=latency["mean"] / 1000,
    )


def run(
    url: str,
    *,
    body: Path,
    content_type: str,
    token: str,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> WrkResult:
    """Drive `url` with `connections` keep-alive connections for `seconds`."""
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body),
        "BENCH_CONTENT_TYPE": content_type,
        "BENCH_TOKEN": token,
    }
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(SCRIPT), url,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_output(done.stdout)
