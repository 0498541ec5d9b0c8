"""`AsyncClient`: the asyncio client, a driver of the sans-IO core (`core.py`) over
httpx.AsyncClient; same behaviour and names as `Client`, with `await`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import httpx

from .batches import (
    Batch,
    event_lines,
    event_lines_async,
    split_lines,
    split_lines_async,
)
from .config import ClientConfig
from .core import Exchange, Follow, Ingest, Progress, ingest_event, read_domains, read_events
from .errors import ConfigurationError, IngestError
from .protocol import KeyFor, Page, Receipt, SendSummary, StreamEnded, http_options
from .retry import RetryPolicy
from .spooling import Drain, Spooler, emptied, spoolable

OnBatch = Callable[[Batch, Receipt], "Awaitable[None] | None"]

T = TypeVar("T")


class AsyncClient:
    """Send events to leitstand from asyncio code. See `Client` for the settings; the
    background drain of a spool is a task, started with the first send (or `async with`)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        max_body: int | None = None,
        max_events: int | None = None,
        spool_dir: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        config: ClientConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config or ClientConfig.resolve(
            url=url, token=token, timeout=timeout, retries=retries, backoff=backoff,
            max_body=max_body, max_events=max_events, spool_dir=spool_dir,
        )
        self._policy = RetryPolicy.from_config(self.config)
        self._sleep = sleep
        self._owns_transport = transport is None
        self._http = httpx.AsyncClient(transport=transport, **http_options(self.config))
        self._spooler = Spooler(self.config, self._policy) if self.config.spool_dir else None
        self._drainer: asyncio.Task[None] | None = None

    async def send(
        self, domain: str, event: Any, *, idempotency_key: str | None = None
    ) -> Receipt:
        """Store one event (a dict) in `domain`; return once the server has it on disk."""
        return await self._deliver(ingest_event(self._policy, domain, event, idempotency_key), 1)

    async def send_many(
        self,
        domain: str,
        events: Iterable[Any] | AsyncIterable[Any],
        *,
        key_for: KeyFor | None = None,
        on_batch: OnBatch | None = None,
    ) -> SendSummary:
        """Store many events as NDJSON batches within the body and event-count limits."""
        lines = (event_lines_async(events) if isinstance(events, AsyncIterable)
                 else event_lines(events))
        return await self.send_lines(domain, lines, key_for=key_for, on_batch=on_batch)

    async def send_lines(
        self,
        domain: str,
        lines: Iterable[bytes] | AsyncIterable[bytes],
        *,
        key_for: KeyFor | None = None,
        on_batch: OnBatch | None = None,
    ) -> SendSummary:
        """Like `send_many`, for NDJSON lines already encoded (the server validates them)."""
        progress = Progress(self._policy, domain, key_for)
        limits = {"max_body": self.config.max_body, "max_events": self.config.max_events}
        batches = (split_lines_async(lines, **limits) if isinstance(lines, AsyncIterable)
                   else _as_async(split_lines(lines, **limits)))
        try:
            async for batch in batches:
                receipt = await self._deliver(progress.sending(batch), batch.events)
                progress.stored(batch, receipt)
                if on_batch is not None:
                    result = on_batch(batch, receipt)
                    if inspect.isawaitable(result):
                        await result
        except IngestError as exc:
            progress.failed(exc)
            raise
        return progress.summary

    async def flush_spool(self) -> Drain:
        """Send everything spooled, oldest first; see `Client.flush_spool`."""
        drain = await self._drain(patient=True)
        assert drain is not None  # a patient drain waits for the lock
        return drain

    async def events(
        self, domain: str, *, cursor: str | None = None, limit: int | None = None,
        tail: int | None = None,
    ) -> Page:
        """Stored lines of `domain` after `cursor`, or the last `tail` ones; and the next cursor."""
        return await self._call(read_events(self._policy, domain, cursor, limit, tail))

    async def follow(
        self, domain: str, *, cursor: str | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Every line stored in `domain` after `cursor`, then each new one; see `Client.follow`."""
        follow = Follow(self._policy, domain, cursor, self.config.timeout)
        while True:
            method, path, options = follow.start()
            outcome: httpx.Response | Exception
            try:
                async with self._http.stream(method, path, **options) as outcome:
                    if outcome.is_success:
                        async for line in outcome.aiter_lines():
                            if (item := follow.feed(line)) is not None:
                                yield item
                    else:
                        await outcome.aread()
            except (StreamEnded, httpx.TransportError) as exc:
                outcome = exc
            await self._sleep(follow.next(outcome))

    async def domains(self) -> list[dict[str, Any]]:
        return await self._call(read_domains(self._policy))

    async def _deliver(self, ingest: Ingest, events: int) -> Receipt:
        """Send one batch; with a spool, behind what is spooled; see `Client._deliver`."""
        spooler = self._spooler
        if spooler is None:
            return await self._call(ingest)
        self._start_drainer()
        if spooler.must_wait() and not (spooler.due() and emptied(await self._drain())):
            return await asyncio.to_thread(spooler.keep, ingest, events, None)
        try:
            return await self._call(ingest)
        except IngestError as exc:
            if not spoolable(exc):
                raise
            return await asyncio.to_thread(spooler.keep, ingest, events, exc)

    async def _drain(self, *, patient: bool = False) -> Drain | None:
        if self._spooler is None:
            raise ConfigurationError("no spool: set LEITSTAND_SPOOL_DIR or pass spool_dir")
        # A patient drain waits for another process's lock: in a thread, not in the loop.
        draining = self._spooler.draining(patient=patient)
        drain = await asyncio.to_thread(draining.__enter__) if patient else draining.__enter__()
        try:
            if drain is not None:
                for ingest in drain:
                    try:
                        drain.sent(await self._call(ingest))
                    except IngestError as exc:
                        drain.failed(exc)
        finally:
            draining.__exit__(None, None, None)
        return drain

    def _start_drainer(self) -> None:
        if self._spooler is not None and self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain_in_background())

    async def _drain_in_background(self) -> None:
        assert self._spooler is not None
        while True:
            await asyncio.sleep(self._spooler.pause())
            try:
                if self._spooler.drain_now():
                    await self._drain()
            except Exception as exc:  # recorded; the task must keep going
                self._spooler.spool.record_error(f"background drain: {exc!r}")

    async def _call(self, exchange: Exchange[T]) -> T:
        """Make the attempts of `exchange` until it has its answer (or raises)."""
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(exchange.method, exchange.path,
                                                   **exchange.options)
            except httpx.TransportError as exc:
                outcome = exc
            step = exchange.next(outcome)
            if isinstance(step, httpx.Response):
                return exchange.result(step)
            await self._sleep(step)

    async def aclose(self) -> None:
        """Stop the background drain (what is spooled stays spooled) and close the connections."""
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        if self._owns_transport:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        self._start_drainer()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _as_async(items: Iterable[Batch]) -> AsyncIterator[Batch]:
    for item in items:
        yield item
