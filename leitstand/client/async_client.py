"""`AsyncClient`: the asyncio client, a driver of the sans-IO core (`core.py`) over
httpx.AsyncClient; same behaviour and names as `Client`, with `await`."""

from __future__ import annotations

import asyncio
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
from .core import Exchange, Follow, Progress, ingest_event, read_domains, read_events
from .errors import IngestError
from .protocol import KeyFor, Page, Receipt, SendSummary, StreamEnded, http_options
from .retry import RetryPolicy

OnBatch = Callable[[Batch, Receipt], "Awaitable[None] | None"]

T = TypeVar("T")


class AsyncClient:
    """Send events to leitstand from asyncio code. See `Client` for the settings."""

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
        transport: httpx.AsyncBaseTransport | None = None,
        config: ClientConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config or ClientConfig.resolve(
            url=url, token=token, timeout=timeout, retries=retries, backoff=backoff,
            max_body=max_body, max_events=max_events,
        )
        self._policy = RetryPolicy.from_config(self.config)
        self._sleep = sleep
        self._owns_transport = transport is None
        self._http = httpx.AsyncClient(transport=transport, **http_options(self.config))

    async def send(
        self, domain: str, event: Any, *, idempotency_key: str | None = None
    ) -> Receipt:
        """Store one event (a dict) in `domain`; return once the server has it on disk."""
        return await self._call(ingest_event(self._policy, domain, event, idempotency_key))

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
                receipt = await self._call(progress.sending(batch))
                progress.stored(batch, receipt)
                if on_batch is not None:
                    result = on_batch(batch, receipt)
                    if inspect.isawaitable(result):
                        await result
        except IngestError as exc:
            progress.failed(exc)
            raise
        return progress.summary

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
        if self._owns_transport:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _as_async(items: Iterable[Batch]) -> AsyncIterator[Batch]:
    for item in items:
        yield item
