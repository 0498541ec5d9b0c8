"""The whole app in-process, a fixed number of requests: for counting instructions, which — unlike
time — does not depend on how loaded the machine is.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.inprocess single 600      # and again with 0 requests

(instructions with N requests - instructions with 0) / N = instructions per request, for the
app as `create_app` builds it (access log, limiter, tokens, decoding, the store's group
commit), without uvicorn and the sockets, with fsync off (its cost is in the kernel, which
callgrind does not count). 16 clients send concurrently, after 320 requests of warm-up.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from typing import Any

import uvloop

from . import cases

CLIENTS = 16
TOKEN = "inprocess-token"


def build_app() -> Any:
    os.environ.update(LEITSTAND_TOKEN=TOKEN, LEITSTAND_DATA_DIR=tempfile.mkdtemp(),
                      LEITSTAND_FSYNC="off", LEITSTAND_RATE_LIMIT="1000000/second")
    from leitstand.app import create_app, tune_process
    from leitstand.config import load_settings

    app = create_app(load_settings())
    tune_process()  # as every server process does
    return app


async def drive(app: Any, kind: cases.Kind, requests: int) -> None:
    body = kind.body()
    path, _, query = kind.path().partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "root_path": "", "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"bench"), (b"x-auth", TOKEN.encode()),
                         (b"content-type", kind.content_type.encode()),
                         (b"content-length", str(len(body)).encode())]}

    async def one() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # never: the body is read once
            raise AssertionError

        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(dict(scope, state={}), receive, send)
        if statuses != [202]:
            raise RuntimeError(f"answered {statuses}")

    async def client(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(client(20) for _ in range(CLIENTS)))  # warm-up
    await asyncio.gather(*(client(requests // CLIENTS) for _ in range(CLIENTS)))


def main(argv: list[str]) -> int:
    kind, requests = cases.KINDS[argv[0]], int(argv[1])
    app = build_app()
    uvloop.install()
    asyncio.run(drive(app, kind, requests))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
