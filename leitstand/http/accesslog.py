"""Request ids and the access log: one line per request, safe against log injection
(leitstand.logs)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import clean, info_line_handler
from ..metrics import Metrics

log = logging.getLogger("leitstand.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_LINE = ("request_id=%s client=%s token=%s method=%s path=%s status=%d "
         "duration_ms=%.1f")


def request_id_from(raw: bytes | None) -> str:
    """The client's `X-Request-ID` if it is a sane token, else a fresh one."""
    if raw:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if _REQUEST_ID.fullmatch(text):
            return text
    # A correlation id, not a secret: the seeded PRNG (reseeded after fork) is enough and,
    # unlike uuid4's os.urandom call, costs no syscall per request.
    return f"{random.getrandbits(128):032x}"


class AccessLog:
    """ASGI middleware: assigns `scope["state"]["request_id"]`, echoes it as `X-Request-ID`,
    logs method, path, status and duration once the answer has been sent, and counts the
    request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        raw_id = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = request_id_from(raw_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            record_request(self.metrics, scope, status, request_id, started)


def record_request(metrics: Metrics, scope: Scope, status: int, request_id: str,
                   started: float) -> None:
    """The request's access log line and its count in `leitstand_requests` (by route template,
    `scope["route"]`); for the middleware and the lean ingest front (front.py) alike."""
    route = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    metrics.requests_by(template, str(status)).inc()
    if log.isEnabledFor(logging.INFO):
        client = scope.get("client")
        args = (
            request_id,
            clean(client[0] if client else "-"),
            scope["state"].get("token_name", "-"),  # a validated name, never a secret
            clean(scope["method"], 16),
            clean(scope["path"]),
            status,
            (time.perf_counter() - started) * 1000,
        )
        handler = info_line_handler(log)
        if handler is not None:
            # The same line as `log.info` writes through leitstand's handler, without the
            # LogRecord and the formatting pass (~20% of a single event's instructions,
            # bench/notes.md); `clean` has made every value visible ASCII.
            handler.add_info_line(log.name, _LINE % args, asyncio.get_running_loop())
            return
        # Another setup: `log.info` without its caller lookup (a walk up the stack for every
        # line, which the line does not show): the same record, to the same handlers.
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, _LINE, args, None,
                                  "record_request"))
