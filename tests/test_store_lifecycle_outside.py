"""An outside writer that follows the documented flock protocol (the `append` recipe of
docs/storage.md, run as it is in its own process) appends while the server rotates all the time:
each of its lines is whole and in exactly one file, and so is every acknowledged event."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from testing import ROOT, ServerProcess

from .conftest import TOKEN
from .lifecycle_checks import all_lines, segment_paths

OUTSIDE_LINES = 1500
_WRITER = """
import sys, time
{recipe}
path = sys.argv[1]
for n in range(int(sys.argv[2])):
    append(path, b'{{"outside":%d,"domain":"garten"}}\\n' % n)
    time.sleep(0.002)  # spread over many rotations
print("done", flush=True)
"""


def documented_recipe() -> str:
    """The Python `append` function of docs/storage.md's rules for outside writers."""
    text = (ROOT / "docs" / "storage.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    recipe = [b for b in blocks if "def append(" in b]
    assert len(recipe) == 1, "docs/storage.md must show one `append` recipe"
    return recipe[0]


@pytest.mark.slow
def test_outside_writer_following_the_protocol_during_rotation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"LEITSTAND_ROTATE_BYTES": "4KiB", "LEITSTAND_COMPRESS": "zstd",
           "LEITSTAND_MIN_FREE_BYTES": "0"}
    acked: set[int] = set()
    with ServerProcess(data, token=TOKEN, workers=2, env=env,
                       log_path=tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
            assert http.post("/v1/ingest?domain=garten", json={"n": -1}).status_code == 202
        acked.add(-1)
        script = _WRITER.format(recipe=documented_recipe())
        outside = subprocess.Popen([sys.executable, "-c", script, str(data / "garten.jsonl"),
                                    str(OUTSIDE_LINES)], stdout=subprocess.PIPE)
        stop = threading.Event()

        def service_writer(first: int) -> None:
            with httpx.Client(base_url=server.url, headers={"X-Auth": TOKEN}, timeout=30) as http:
                n = first
                while not stop.is_set():
                    batch = [{"n": n + k, "pad": "s" * 30} for k in range(5)]
                    answer = http.post("/v1/ingest?domain=garten", json=batch)
                    assert answer.status_code == 202, answer.text
                    acked.update(range(n, n + 5))
                    n += 5

        writers = [threading.Thread(target=service_writer, args=(k * 10**6,)) for k in range(4)]
        for thread in writers:
            thread.start()
        try:
            out, _ = outside.communicate(timeout=300)
            assert out.strip() == b"done"
        finally:
            stop.set()
            if outside.poll() is None:
                outside.kill()
                outside.wait(10)
            for thread in writers:
                thread.join(60)
        end = time.monotonic() + 60
        while any(not p.name.endswith(".zst") for p in segment_paths(data, "garten")):
            assert time.monotonic() < end, "segments were not compressed in time"
            time.sleep(0.2)

    events = [orjson.loads(line) for line in all_lines(data, "garten")]  # all whole
    outside_seen = [e["outside"] for e in events if "outside" in e]
    assert sorted(outside_seen) == list(range(OUTSIDE_LINES))  # each exactly once
    assert outside_seen == list(range(OUTSIDE_LINES))  # and in the order written
    service = [e["n"] for e in events if "n" in e]
    assert len(service) == len(set(service)) and set(service) == acked
    assert len(segment_paths(data, "garten")) > 5  # it did run during many rotations
