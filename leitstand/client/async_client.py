"""`AsyncClient`: the asyncio client; same behaviour and names as `Client`, with `await`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpx

from .batches import (
    Batch,
    encode_event,
    event_lines,
    event_lines_async,
    split_lines,
    split_lines_async,
)
from .config import ClientConfig
from .errors import IngestError
from .protocol import (
    DOMAINS_PATH,
    EVENTS_PATH,
    INGEST_PATH,
    JSON,
    NDJSON,
    STREAM_PATH,
    KeyFor,
    Page,
    Receipt,
    SendSummary,
    SSEParser,
    StreamEnded,
    domains_of,
    events_params,
    http_options,
    ingest_request,
    new_key,
    page_of,
    random_keys,
    receipt_of,
    stream_request,
)
from .retry import RetryPolicy

OnBatch = Callable[[Batch, Receipt], "Awaitable[None] | None"]


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
        return await self._post(domain, encode_event(event), JSON, idempotency_key or new_key())

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
        key_for = key_for or random_keys
        summary = SendSummary()
        limits = {"max_body": self.config.max_body, "max_events": self.config.max_events}
        batches = (split_lines_async(lines, **limits) if isinstance(lines, AsyncIterable)
                   else _as_async(split_lines(lines, **limits)))
        try:
            async for batch in batches:
                try:
                    receipt = await self._post(domain, batch.body, NDJSON, key_for(batch))
                except IngestError as exc:
                    exc.batch = batch
                    raise
                summary.add(batch, receipt)
                if on_batch is not None:
                    result = on_batch(batch, receipt)
                    if inspect.isawaitable(result):
                        await result
        except IngestError as exc:
            exc.accepted = summary.events
            raise
        return summary

    async def events(
        self, domain: str, *, cursor: str | None = None, limit: int | None = None,
        tail: int | None = None,
    ) -> Page:
        """Stored lines of `domain` after `cursor`, or the last `tail` ones; and the next cursor."""
        response, _ = await self._request("GET", EVENTS_PATH,
                                          params=events_params(domain, cursor, limit, tail))
        return page_of(response)

    async def follow(
        self, domain: str, *, cursor: str | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Every line stored in `domain` after `cursor`, then each new one; see `Client.follow`."""
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | Exception
            try:
                async with self._http.stream(
                    "GET", STREAM_PATH, **stream_request(domain, cursor, self.config.timeout)
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        outcome = response
                    else:
                        parser = SSEParser()
                        async for line in response.aiter_lines():
                            event = parser.feed(line)
                            if event is None:
                                continue
                            attempt = 1
                            cursor = event[0] if event[0] is not None else cursor
                            yield cursor or "", event[1].encode() + b"\n"
                        outcome = httpx.RemoteProtocolError("the server ended the stream")
            except StreamEnded as exc:
                outcome = httpx.RemoteProtocolError(str(exc))
            except httpx.TransportError as exc:
                outcome = exc
            error, delay = self._policy.verdict(attempt, outcome)
            if delay is None:
                raise error from (outcome if isinstance(outcome, Exception) else None)
            await self._sleep(delay)

    async def domains(self) -> list[dict[str, Any]]:
        response, _ = await self._request("GET", DOMAINS_PATH)
        return domains_of(response)

    async def _post(self, domain: str, body: bytes, content_type: str, key: str) -> Receipt:
        response, attempts = await self._request(
            "POST", INGEST_PATH, **ingest_request(domain, body, content_type, key)
        )
        return receipt_of(response, key, attempts)

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, int]:
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                outcome = exc
            else:
                if outcome.is_success:
                    return outcome, attempt
            error, delay = self._policy.verdict(attempt, outcome)
            if delay is None:
                raise error from (outcome if isinstance(outcome, Exception) else None)
            await self._sleep(delay)

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
