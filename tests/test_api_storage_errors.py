"""Storage errors as the client sees them, in-process: a lock held by someone else → 503
`lock timeout` with Retry-After, while other domains and the event loop go on; a full disk → 507
with nothing left behind. (The real-server versions are in test_e2e_server.py and
test_store_diskfull.py.)"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from testing import ROOT

pytestmark = pytest.mark.anyio


async def test_lock_timeout_is_503_while_other_domains_and_the_loop_go_on(make_client,
                                                                          data_dir) -> None:
    client = make_client(lock_timeout=3.0, rate_limit="100/minute")
    assert (await client.post("/v1/ingest?domain=aussen", json={"n": 1})).status_code == 202
    fd = os.open(data_dir / "aussen.jsonl", os.O_RDWR)
    loop = asyncio.get_running_loop()
    finished: dict[str, float] = {}
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another descriptor, as an outside tool would hold it
        blocked = asyncio.ensure_future(
            client.post("/ingest/aussen", json={"n": 2}, headers={"X-Request-ID": "blocked"}))
        blocked.add_done_callback(lambda _: finished.setdefault("blocked", loop.time()))
        await asyncio.sleep(0)
        # While that request waits for the lock, the same event loop serves everything else.
        for i in range(3):
            other = await client.post("/v1/ingest?domain=innen", json={"i": i})
            assert other.status_code == 202
        assert (await client.get("/health")).status_code == 200
        finished["others"] = loop.time()
        answer = await asyncio.wait_for(blocked, timeout=30)
    finally:
        os.close(fd)
    # Had the lock wait blocked the loop, the others would have come only after the timeout.
    assert finished["others"] < finished["blocked"]
    assert answer.status_code == 503
    assert answer.json() == {"detail": "lock timeout"}
    assert answer.headers["Retry-After"] == "3"
    assert answer.headers["X-RateLimit-Limit"] == "100"
    assert answer.headers["Deprecation"]  # the legacy route says so on errors too
    assert answer.headers["X-Request-ID"] == "blocked"
    assert (data_dir / "aussen.jsonl").read_bytes().count(b"\n") == 1
    metrics = (await client.get("/metrics")).text
    assert 'leitstand_rejections_total{reason="lock_timeout"} 1.0' in metrics
    # Released: the next request goes through.
    assert (await client.post("/ingest/aussen", json={"n": 3})).status_code == 200


async def test_lock_released_in_time_means_success(make_client, data_dir) -> None:
    client = make_client(lock_timeout=30.0)
    assert (await client.post("/v1/ingest?domain=aussen", json={"n": 1})).status_code == 202
    fd = os.open(data_dir / "aussen.jsonl", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting = asyncio.ensure_future(client.post("/v1/ingest?domain=aussen", json={"n": 2}))
        await client.get("/health")  # the request is parked on the lock, the loop is free
        assert not waiting.done()
    finally:
        os.close(fd)
    answer = await asyncio.wait_for(waiting, timeout=30)
    assert answer.status_code == 202
    assert (data_dir / "aussen.jsonl").read_bytes().count(b"\n") == 2


# A full disk, for real: a tiny tmpfs in a private mount namespace (no root needed where user
# namespaces are enabled), the app in-process inside it.
DISK_FULL_SCRIPT = textwrap.dedent("""
    import asyncio, json, os, subprocess, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    data = Path(sys.argv[2])
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(data)], check=True)
    import httpx
    from leitstand.app import create_app
    from leitstand.config import Settings

    async def main():
        app = create_app(Settings(_env_file=None, token="t", data_dir=data,
                                    min_free_bytes=0))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://x", headers={"X-Auth": "t"}) as client:
            first = await client.post("/v1/ingest?domain=aussen", json={"n": 1})
            before = (data / "aussen.jsonl").read_bytes()
            with open(data / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\\0" * 4096)
                except OSError:
                    pass
            big = [{"pad": "x" * 1000, "i": i} for i in range(200)]
            full = await client.post("/v1/ingest?domain=aussen", json=big)
            after = (data / "aussen.jsonl").read_bytes()
            os.unlink(data / "filler")
            again = await client.post("/v1/ingest?domain=aussen", json={"n": 2})
            print(json.dumps({
                "first": first.status_code, "status": full.status_code, "body": full.json(),
                "retry_after": full.headers.get("retry-after"),
                "unchanged": before == after, "again": again.status_code,
                "lines": (data / "aussen.jsonl").read_bytes().count(b"\\n"),
            }))
        await app.state.service.store.close()

    asyncio.run(main())
""")


def test_full_disk_is_507_and_nothing_partial_is_left(tmp_path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) missing; test_store_diskfull.py covers the full disk")
    probe = subprocess.run([unshare, "-Urm", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("no user namespaces here; test_store_diskfull.py covers the full disk")
    out = subprocess.run(
        [unshare, "-Urm", sys.executable, "-c", DISK_FULL_SCRIPT, str(ROOT),
         str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["first"] == 202
    assert result["status"] == 507, result
    assert list(result["body"]) == ["detail"] and "disk full" in result["body"]["detail"]
    assert result["retry_after"] is not None
    assert result["unchanged"] is True  # nothing of the failed batch stayed behind
    assert (result["again"], result["lines"]) == (202, 2)
