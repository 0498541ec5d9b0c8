"""Helpers for the storage tests: read a data file strictly, hold a domain's lock from another
process, scrape a metric."""

from __future__ import annotations

import re
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def stored_events(path: Path) -> list[dict[str, Any]]:
    """Every line of a data file as an object; fails on a partial or invalid line."""
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with a partial line: {data[-80:]!r}"
    events = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"{path}:{number} is not JSON: {line[:120]!r}") from exc
        assert isinstance(event, dict), f"{path}:{number} is not an object"
        events.append(event)
    return events


@contextmanager
def lock_held_by_another_process(path: Path, timeout: float = 20.0) -> Iterator[subprocess.Popen]:
    """A separate process holds `flock(LOCK_EX)` on `path` until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        # The holder prints once it has the lock.
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        assert ready, f"the other process did not get the lock within {timeout}s"
        line = proc.stdout.readline()
        assert line.strip() == b"locked", line
        yield proc
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.write(b"\n")
            proc.stdin.flush()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample `name` in a Prometheus text page (0 if absent)."""
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
