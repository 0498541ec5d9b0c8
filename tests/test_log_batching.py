"""The log handler batches the access log (one write per event loop iteration) and never loses a
line: in-process against a stream that counts its writes, and a real server stopped right after
a burst of requests, with one worker and with two."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from leitstand.logs import LINE_FORMAT, LoopBatchingHandler, SafeFormatter, info_line_handler
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


_NAMES = itertools.count()


@contextmanager
def leitstand_like() -> Iterator[tuple[logging.Logger, logging.Logger, CountingStream]]:
    """A parent logger set up as `configure_logging` sets up "leitstand", and a child. Set up
    inside the test: pytest's logging plugin attaches its own handler to every non-propagating
    logger that exists when a test phase begins (so in-process tests see ordinary records)."""
    stream = CountingStream()
    handler = LoopBatchingHandler(stream)
    handler.setFormatter(SafeFormatter(LINE_FORMAT))
    parent = logging.getLogger(f"leitstand-test-lines-{next(_NAMES)}")  # new each time
    parent.setLevel(logging.INFO)
    parent.propagate = False
    parent.addHandler(handler)
    child = logging.getLogger(f"{parent.name}.access")
    try:
        yield parent, child, stream
    finally:
        parent.removeHandler(handler)


@pytest.mark.parametrize("created", [1764763460.0, 1764763460.0015, 1764763460.9999,
                                     1764763461.123456])
def test_an_info_line_handed_over_as_text_equals_the_logged_record(
        monkeypatch: pytest.MonkeyPatch, created: float) -> None:
    """The access log's direct path (`add_info_line`) writes exactly the line `log.info`
    writes through the same handler, time stamp and milliseconds included."""
    monkeypatch.setattr(time, "time", lambda: created)
    message = "request_id=ab12 client=127.0.0.1 token=- method=POST path=/v1/ingest status=202"

    async def main() -> None:
        child.info(message)
        handler = info_line_handler(child)
        assert handler is not None
        handler.add_info_line(child.name, message, asyncio.get_running_loop())
        await asyncio.sleep(0)

    with leitstand_like() as (_, child, stream):
        asyncio.run(main())
    logged, direct = stream.getvalue().splitlines()
    assert direct == logged
    assert logged.endswith(f" INFO {child.name} {message}")


def test_any_other_logging_setup_gets_records() -> None:
    """A filter, a second handler, another format or level, a disabled logger: the direct
    path is not taken, so whatever was added sees ordinary records."""
    with leitstand_like() as (parent, child, _):
        check_other_setups(parent, child)


def check_other_setups(parent: logging.Logger, child: logging.Logger) -> None:
    (handler,) = parent.handlers
    assert info_line_handler(child) is handler
    assert info_line_handler(parent) is handler

    def refused(change: Callable[[], Callable[[], None]]) -> None:
        undo = change()
        try:
            assert info_line_handler(child) is None
        finally:
            undo()
        assert info_line_handler(child) is handler

    extra = logging.NullHandler()
    only = logging.Filter("nothing")
    refused(lambda: (child.addHandler(extra), lambda: child.removeHandler(extra))[1])
    refused(lambda: (parent.addHandler(extra), lambda: parent.removeHandler(extra))[1])
    refused(lambda: (child.addFilter(only), lambda: child.removeFilter(only))[1])
    refused(lambda: (handler.addFilter(only), lambda: handler.removeFilter(only))[1])
    refused(lambda: (handler.setLevel(logging.WARNING), lambda: handler.setLevel(0))[1])
    formatter = handler.formatter
    refused(lambda: (handler.setFormatter(SafeFormatter("%(message)s")),
                     lambda: handler.setFormatter(formatter))[1])

    def disable() -> Callable[[], None]:
        child.disabled = True
        return lambda: setattr(child, "disabled", False)

    refused(disable)

    def propagate() -> Callable[[], None]:
        parent.propagate = True
        return lambda: setattr(parent, "propagate", False)

    refused(propagate)
