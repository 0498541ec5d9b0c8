"""The response of `GET /v1/stream`: live fan-out to Server-Sent-Events clients.

Each stream client follows the domain's log by itself, from its own cursor, through
`Store.read` — the same path as `GET /v1/events` — so a stream resumes exactly where a
`Last-Event-ID` says and sees lines from other workers and outside tools too. The `Hub`
(hub.py) wakes the clients of a domain once the store has acknowledged new events; a timed
re-read catches writers outside this process.

Ingest never waits for a client: publishing sets an event and returns. A client's buffer is
bounded — at most one page of lines is in flight, then the transport's write buffer — and a
client that does not take a page within `send_timeout` is disconnected: it gets a final
`event: disconnect` with the reason (if it still reads at all), the reason is logged and
counted in `leitstand_stream_disconnects_total`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..errors import LeitstandError, NotFound
from ..store import Store
from ..store.base import Batch
from .hub import Hub

log = logging.getLogger("leitstand.stream")


@dataclass(frozen=True, slots=True)
class StreamOptions:
    send_timeout: float = 30.0  # a client that takes no page for this long is disconnected
    keepalive: float = 15.0  # a comment line when idle, so proxies and dead peers show up
    poll: float = 1.0  # re-read this often without a wake-up (other processes' writes)
    page: int = 100  # lines per read and per send (also capped at 4 MiB by the reader)
    min_interval: float = 0.1  # between two reads of a caught-up client


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge(
            "leitstand_stream_clients", "Connected event-stream clients.", registry=registry
        )
        self.disconnects = Counter(
            "leitstand_stream_disconnects",
            "Event streams ended by the server, by reason (slow: the client did not read).",
            ["reason"],
            registry=registry,
        )


class _TooSlow(Exception):
    pass


class EventStream(Response):
    """The response of `GET /v1/stream`: `first` is sent at once, then new lines follow."""

    def __init__(
        self,
        *,
        store: Store,
        hub: Hub,
        domain: str,
        first: Batch,
        client: str,
        options: StreamOptions,
        metrics: StreamMetrics,
        headers: dict[str, str],
        revoked: Callable[[], str | None] = lambda: None,
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.store = store
        self.hub = hub
        self.domain = domain
        self.first = first
        self.client = client
        self.options = options
        self.metrics = metrics
        self.extra_headers = headers
        self.revoked = revoked  # why the client may no longer read the domain; asked each turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **{k.lower(): v for k, v in self.extra_headers.items()},
        }
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        })
        self.metrics.clients.inc()
        reason: tuple[str, str] | None = None
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch_disconnect, receive, tasks.cancel_scope)
                tasks.start_soon(self._watch_shutdown, tasks.cancel_scope)
                reason = await self._pump(send)
                tasks.cancel_scope.cancel()
            if self.hub.closing.is_set():
                reason = ("shutdown", "the server is shutting down")
            if reason is not None:
                self.metrics.disconnects.labels(reason[0]).inc()
                log.log(logging.INFO if reason[0] == "shutdown" else logging.WARNING,
                        "event stream of %s for %s ended: %s", self.domain, self.client, reason[1])
                await self._goodbye(send, reason[1])
        finally:
            self.metrics.clients.dec()

    async def _watch_shutdown(self, scope: anyio.CancelScope) -> None:
        await self.hub.closing.wait()
        scope.cancel()

    async def _watch_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def _pump(self, send: Send) -> tuple[str, str] | None:
        """Send lines as they come. Returns (label, reason) when the server ends the stream."""
        options = self.options
        batch = self.first
        last_sent = time.monotonic()
        try:
            await self._send(send, b"retry: 2000\n\n")
            last_read = time.monotonic()
            while True:
                if batch.lines:
                    await self._send(send, render(batch))
                    last_sent = time.monotonic()
                cursor = batch.next_cursor
                if len(batch.lines) < options.page:
                    # Caught up: let new events pile up a little, so that a busy domain costs
                    # each client a few reads a second, not one per commit.
                    await anyio.sleep(max(0.0, last_read + options.min_interval
                                          - time.monotonic()))
                why = self.revoked()
                if why is not None:  # the tokens file changed under an open stream
                    return ("revoked", why)
                waiter = self.hub.waiter(self.domain)
                try:
                    batch = await self.store.read(self.domain, cursor=cursor, limit=options.page)
                except NotFound:  # removed, e.g. while rotated: wait for the new file
                    batch = Batch([], [], cursor)
                last_read = time.monotonic()
                if batch.lines:
                    continue
                idle = time.monotonic() - last_sent
                with anyio.move_on_after(min(options.poll, max(0.0, options.keepalive - idle))):
                    await waiter.wait()
                if time.monotonic() - last_sent >= options.keepalive:
                    await self._send(send, b": keepalive\n\n")
                    last_sent = time.monotonic()
        except _TooSlow:
            return ("slow", f"client did not read for {options.send_timeout:g}s "
                    f"(its buffer stayed full)")
        except LeitstandError as exc:
            return (exc.reason, exc.detail)
        except OSError as exc:
            log.exception("reading %s for a stream failed", self.domain)
            return ("error", f"cannot read the domain's file: {exc.strerror or exc}")

    async def _send(self, send: Send, body: bytes) -> None:
        message: Message = {"type": "http.response.body", "body": body, "more_body": True}
        try:
            with anyio.fail_after(self.options.send_timeout):
                await send(message)
        except TimeoutError:
            raise _TooSlow from None

    async def _goodbye(self, send: Send, reason: str) -> None:
        """Tell the client why (if it still reads) and end the response."""
        body = b"event: disconnect\ndata: " + orjson.dumps({"reason": reason}) + b"\n\n"
        with anyio.move_on_after(1.0):
            await send({"type": "http.response.body", "body": body, "more_body": False})


def render(batch: Batch) -> bytes:
    """SSE frames: `id: <cursor after the line>` and `data: <the stored line>`."""
    parts: list[bytes] = []
    for line, cursor in zip(batch.lines, batch.cursors, strict=True):
        data = line[:-1]
        parts.append(b"id: " + cursor.encode("ascii") + b"\n")
        if b"\r" in data:  # a bare CR would end the field early: one `data:` per piece
            data = data.removesuffix(b"\r")
            parts.extend(b"data: " + piece + b"\n" for piece in data.split(b"\r"))
            parts.append(b"\n")
        else:
            parts.append(b"data: " + data + b"\n\n")
    return b"".join(parts)
