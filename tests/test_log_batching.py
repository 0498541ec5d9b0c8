"""The log handler batches the access log (one write per event loop iteration) and never loses a
line: in-process against a stream that counts its writes, and a real server stopped right after
a burst of requests, with one worker and with two."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from leitstand.logs import LoopBatchingHandler, SafeFormatter
from testing import ServerProcess

from .conftest import TOKEN


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, CountingStream]]:
    stream = CountingStream()
    handler = LoopBatchingHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("leitstand-test-batching")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    try:
        yield log, stream
    finally:
        log.removeHandler(handler)


def test_lines_of_one_loop_iteration_are_one_write(logger) -> None:
    log, stream = logger

    async def main() -> list[str]:
        for n in range(5):
            log.info("line %d", n)
        during = stream.getvalue()
        await asyncio.sleep(0)  # the iteration ends: the flush callback runs
        await asyncio.sleep(0)
        return [during, stream.getvalue()]

    during, after = asyncio.run(main())
    assert during == ""
    assert after == "".join(f"INFO line {n}\n" for n in range(5))
    assert stream.writes == 1


def test_warnings_and_other_threads_write_at_once_in_order(logger) -> None:
    log, stream = logger

    async def main() -> None:
        log.info("first")
        log.warning("second")  # written at once, after what is pending
        assert stream.getvalue() == "INFO first\nWARNING second\n"
        log.info("third")
        thread = threading.Thread(target=log.info, args=("from a thread",))
        thread.start()
        thread.join(timeout=10)
        assert stream.getvalue().endswith("INFO third\nINFO from a thread\n")

    asyncio.run(main())


def test_flush_writes_what_a_stopped_loop_left(logger) -> None:
    log, stream = logger
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.sleep(0))
        # logged from a callback that is the loop's last: the flush it schedules never runs
        loop.call_soon(log.info, "last")
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert stream.getvalue() == ""  # the loop stopped before the flush it had scheduled
    logging.getLogger("leitstand-test-batching").handlers[0].flush()  # what shutdown() calls
    assert stream.getvalue() == "INFO last\n"

    async def later() -> None:  # a new loop: the line is not held back either
        log.info("next")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(later())
    assert stream.getvalue() == "INFO last\nINFO next\n"


ACCESS = re.compile(r"INFO leitstand\.access request_id=\S+ .* path=/v1/ingest status=202 ")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stopped_server_has_logged_every_request(tmp_path: Path, workers: int) -> None:
    server = ServerProcess(tmp_path / "data", workers=workers).start()
    try:
        def post(n: int) -> int:
            with httpx.Client(timeout=30) as client:
                return client.post(f"{server.url}/v1/ingest?domain=aussen", json={"n": n},
                                   headers={"X-Auth": TOKEN}).status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(post, range(200)))
        assert statuses == [202] * 200
    finally:
        server.stop()  # SIGTERM right after the last answer: pending lines must be written
    log = server.log_path.read_text(errors="replace")
    assert sum(1 for line in log.splitlines() if ACCESS.search(line)) == 200
