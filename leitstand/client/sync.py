"""`Client`: the synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from . import background
from .async_client import AsyncClient
from .batches import Batch, encode_event, event_lines, split_lines
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

Transport = httpx.BaseTransport | httpx.AsyncBaseTransport


class Client:
    """Send events to leitstand, retrying what is safe to retry.

    Settings not given come from `LEITSTAND_URL`, `LEITSTAND_TOKEN` (required),
    `LEITSTAND_TIMEOUT`, `LEITSTAND_RETRIES`, `LEITSTAND_BACKOFF`, `LEITSTAND_MAX_BODY` and
    `LEITSTAND_MAX_EVENTS`. Every attempt of one logical send carries the same
    `Idempotency-Key`, so the server stores it once however often it is retried.

    `transport` may be any httpx transport — also an async one such as
    `httpx.ASGITransport(app=app)`, which is then driven on a background event loop.
    A transport passed in is not closed by `close()`.
    """

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
        transport: Transport | None = None,
        config: ClientConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or ClientConfig.resolve(
            url=url, token=token, timeout=timeout, retries=retries, backoff=backoff,
            max_body=max_body, max_events=max_events,
        )
        self._policy = RetryPolicy.from_config(self.config)
        self._sleep = sleep
        self._bridge: AsyncClient | None = None
        self._http: httpx.Client | None = None
        self._owns_transport = transport is None
        if isinstance(transport, httpx.AsyncBaseTransport) and not isinstance(
            transport, httpx.BaseTransport
        ):
            self._bridge = AsyncClient(config=self.config, transport=transport)
        else:
            self._http = httpx.Client(transport=transport, **http_options(self.config))

    # -- sending -------------------------------------------------------------------------------
    def send(self, domain: str, event: Any, *, idempotency_key: str | None = None) -> Receipt:
        """Store one event (a dict) in `domain`; return once the server has it on disk."""
        if self._bridge is not None:
            return background.run(self._bridge.send(domain, event,
                                                    idempotency_key=idempotency_key))
        body = encode_event(event)
        return self._post(domain, body, JSON, idempotency_key or new_key())

    def send_many(
        self,
        domain: str,
        events: Iterable[Any],
        *,
        key_for: KeyFor | None = None,
        on_batch: Callable[[Batch, Receipt], None] | None = None,
    ) -> SendSummary:
        """Store many events as NDJSON batches within the body and event-count limits.
        On failure the raised `IngestError` has `.accepted`: events stored by earlier batches."""
        return self.send_lines(domain, event_lines(events), key_for=key_for, on_batch=on_batch)

    def send_lines(
        self,
        domain: str,
        lines: Iterable[bytes],
        *,
        key_for: KeyFor | None = None,
        on_batch: Callable[[Batch, Receipt], None] | None = None,
    ) -> SendSummary:
        """Like `send_many`, for NDJSON lines already encoded (the server validates them)."""
        if self._bridge is not None:
            return background.run(self._bridge.send_lines(domain, lines, key_for=key_for,
                                                          on_batch=on_batch))
        key_for = key_for or random_keys
        summary = SendSummary()
        try:
            for batch in split_lines(lines, max_body=self.config.max_body,
                                     max_events=self.config.max_events):
                try:
                    receipt = self._post(domain, batch.body, NDJSON, key_for(batch))
                except IngestError as exc:
                    exc.batch = batch
                    raise
                summary.add(batch, receipt)
                if on_batch is not None:
                    on_batch(batch, receipt)
        except IngestError as exc:
            exc.accepted = summary.events
            raise
        return summary

    # -- reading -------------------------------------------------------------------------------
    def events(
        self, domain: str, *, cursor: str | None = None, limit: int | None = None,
        tail: int | None = None,
    ) -> Page:
        """Stored lines of `domain` after `cursor`, or the last `tail` ones; and the next cursor."""
        if self._bridge is not None:
            return background.run(self._bridge.events(domain, cursor=cursor, limit=limit,
                                                      tail=tail))
        response, _ = self._request("GET", EVENTS_PATH,
                                    params=events_params(domain, cursor, limit, tail))
        return page_of(response)

    def follow(self, domain: str, *, cursor: str | None = None) -> Iterator[tuple[str, bytes]]:
        """Every line stored in `domain` after `cursor` (without one: only lines stored from now
        on), as (cursor after the line, line), as they are stored. Reconnects with the retry
        policy and resumes where it left off; runs until the caller stops iterating.
        Needs a streaming transport: httpx.ASGITransport buffers whole responses, so it cannot
        follow the endless stream."""
        if self._bridge is not None:
            stream = self._bridge.follow(domain, cursor=cursor)
            try:
                while True:
                    try:
                        yield background.run(stream.__anext__())
                    except StopAsyncIteration:
                        return
            finally:
                background.run(stream.aclose())
        assert self._http is not None
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | Exception
            try:
                with self._http.stream(
                    "GET", STREAM_PATH, **stream_request(domain, cursor, self.config.timeout)
                ) as response:
                    if not response.is_success:
                        response.read()
                        outcome = response
                    else:
                        for event_id, data in SSEParser().events(response.iter_lines()):
                            attempt = 1
                            cursor = event_id if event_id is not None else cursor
                            yield cursor or "", data.encode() + b"\n"
                        outcome = httpx.RemoteProtocolError("the server ended the stream")
            except StreamEnded as exc:
                outcome = httpx.RemoteProtocolError(str(exc))
            except httpx.TransportError as exc:
                outcome = exc
            error, delay = self._policy.verdict(attempt, outcome)
            if delay is None:
                raise error from (outcome if isinstance(outcome, Exception) else None)
            self._sleep(delay)

    def domains(self) -> list[dict[str, Any]]:
        """The domains the server stores, with file, event count, bytes and last event time."""
        if self._bridge is not None:
            return background.run(self._bridge.domains())
        response, _ = self._request("GET", DOMAINS_PATH)
        return domains_of(response)

    # -- plumbing ------------------------------------------------------------------------------
    def _post(self, domain: str, body: bytes, content_type: str, key: str) -> Receipt:
        response, attempts = self._request(
            "POST", INGEST_PATH, **ingest_request(domain, body, content_type, key)
        )
        return receipt_of(response, key, attempts)

    def _request(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, int]:
        assert self._http is not None
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                outcome = exc
            else:
                if outcome.is_success:
                    return outcome, attempt
            error, delay = self._policy.verdict(attempt, outcome)
            if delay is None:
                raise error from (outcome if isinstance(outcome, Exception) else None)
            self._sleep(delay)

    def close(self) -> None:
        if self._bridge is not None:
            background.run(self._bridge.aclose())
        elif self._http is not None and self._owns_transport:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
