"""`Client`: the synchronous client, a driver of the sans-IO core (`core.py`) over httpx.Client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpx

from .batches import Batch, event_lines, split_lines
from .bridge import AsyncTransportBridge
from .config import ClientConfig
from .core import Exchange, Follow, Ingest, Progress, ingest_event, read_domains, read_events
from .errors import ConfigurationError, IngestError
from .protocol import KeyFor, Page, Receipt, SendSummary, StreamEnded, http_options
from .retry import RetryPolicy
from .spooling import Drain, Spooler, emptied, spoolable

Transport = httpx.BaseTransport | httpx.AsyncBaseTransport

T = TypeVar("T")


class Client:
    """Send events to leitstand, retrying what is safe to retry.

    Settings not given come from `LEITSTAND_URL`, `LEITSTAND_TOKEN` (required),
    `LEITSTAND_TIMEOUT`, `LEITSTAND_RETRIES`, `LEITSTAND_BACKOFF`, `LEITSTAND_MAX_BODY` and
    `LEITSTAND_MAX_EVENTS`. Every attempt of one logical send carries the same
    `Idempotency-Key`, so the server stores it once however often it is retried.

    With `LEITSTAND_SPOOL_DIR` (or `spool_dir`), what cannot be delivered after the retries is
    kept on disk and sent later (see `spooling.py`): by a background thread, before the next
    send, and by `flush_spool()`. `LEITSTAND_CA_FILE` names the CAs to trust for https.

    `transport` may be any httpx transport — also an async one such as
    `httpx.ASGITransport(app=app)`, which is then driven on an event loop in a thread the
    client owns. A transport passed in is not closed by `close()`.
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
        spool_dir: str | None = None,
        transport: Transport | None = None,
        config: ClientConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or ClientConfig.resolve(
            url=url, token=token, timeout=timeout, retries=retries, backoff=backoff,
            max_body=max_body, max_events=max_events, spool_dir=spool_dir,
        )
        self._policy = RetryPolicy.from_config(self.config)
        self._sleep = sleep
        self._bridge: AsyncTransportBridge | None = None
        if isinstance(transport, httpx.AsyncBaseTransport) and not isinstance(
            transport, httpx.BaseTransport
        ):
            transport = self._bridge = AsyncTransportBridge(transport)
        self._owns_transport = transport is None
        self._http = httpx.Client(transport=transport, **http_options(self.config))
        self._spooler = Spooler(self.config, self._policy) if self.config.spool_dir else None
        self._stop = threading.Event()
        self._drainer: threading.Thread | None = None
        if self._spooler is not None:
            self._drainer = threading.Thread(target=self._drain_in_background,
                                             name="leitstand-spool-drain", daemon=True)
            self._drainer.start()

    # -- sending -------------------------------------------------------------------------------
    def send(self, domain: str, event: Any, *, idempotency_key: str | None = None) -> Receipt:
        """Store one event (a dict) in `domain`; return once the server has it on disk."""
        return self._deliver(ingest_event(self._policy, domain, event, idempotency_key), 1)

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
        progress = Progress(self._policy, domain, key_for)
        try:
            for batch in split_lines(lines, max_body=self.config.max_body,
                                     max_events=self.config.max_events):
                receipt = self._deliver(progress.sending(batch), batch.events)
                progress.stored(batch, receipt)
                if on_batch is not None:
                    on_batch(batch, receipt)
        except IngestError as exc:
            progress.failed(exc)
            raise
        return progress.summary

    def flush_spool(self) -> Drain:
        """Send everything spooled, oldest first (waiting for a drain running elsewhere, and
        retrying each batch as a send does); the returned `Drain` says what happened."""
        drain = self._drain(patient=True)
        assert drain is not None  # a patient drain waits for the lock
        return drain

    # -- reading -------------------------------------------------------------------------------
    def events(
        self, domain: str, *, cursor: str | None = None, limit: int | None = None,
        tail: int | None = None,
    ) -> Page:
        """Stored lines of `domain` after `cursor`, or the last `tail` ones; and the next cursor."""
        return self._call(read_events(self._policy, domain, cursor, limit, tail))

    def follow(self, domain: str, *, cursor: str | None = None) -> Iterator[tuple[str, bytes]]:
        """Every line stored in `domain` after `cursor` (without one: only lines stored from now
        on), as (cursor after the line, line), as they are stored. Reconnects with the retry
        policy and resumes where it left off; runs until the caller stops iterating.
        Needs a streaming transport: httpx.ASGITransport buffers whole responses, so it cannot
        follow the endless stream."""
        follow = Follow(self._policy, domain, cursor, self.config.timeout)
        while True:
            method, path, options = follow.start()
            outcome: httpx.Response | Exception
            try:
                with self._http.stream(method, path, **options) as outcome:
                    if outcome.is_success:
                        for line in outcome.iter_lines():
                            if (item := follow.feed(line)) is not None:
                                yield item
                    else:
                        outcome.read()
            except (StreamEnded, httpx.TransportError) as exc:
                outcome = exc
            self._sleep(follow.next(outcome))

    def domains(self) -> list[dict[str, Any]]:
        """The domains the server stores, with file, event count, bytes and last event time."""
        return self._call(read_domains(self._policy))

    # -- plumbing ------------------------------------------------------------------------------
    def _deliver(self, ingest: Ingest, events: int) -> Receipt:
        """Send one batch; with a spool, behind what is spooled, and spooled itself if it
        cannot be delivered now."""
        spooler = self._spooler
        if spooler is None:
            return self._call(ingest)
        if spooler.must_wait() and not (spooler.due() and emptied(self._drain())):
            return spooler.keep(ingest, events, None)
        try:
            return self._call(ingest)
        except IngestError as exc:
            if not spoolable(exc):
                raise
            return spooler.keep(ingest, events, exc)

    def _drain(self, *, patient: bool = False) -> Drain | None:
        if self._spooler is None:
            raise ConfigurationError("no spool: set LEITSTAND_SPOOL_DIR or pass spool_dir")
        with self._spooler.draining(patient=patient, stop=self._stop.is_set) as drain:
            if drain is None:
                return None
            for ingest in drain:
                try:
                    drain.sent(self._call(ingest))
                except IngestError as exc:
                    drain.failed(exc)
        return drain

    def _drain_in_background(self) -> None:
        assert self._spooler is not None
        while not self._stop.wait(self._spooler.pause()):
            try:
                if self._spooler.drain_now():
                    self._drain()
            except Exception as exc:  # recorded; the thread must keep going
                self._spooler.spool.record_error(f"background drain: {exc!r}")

    def _call(self, exchange: Exchange[T]) -> T:
        """Make the attempts of `exchange` until it has its answer (or raises)."""
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(exchange.method, exchange.path, **exchange.options)
            except httpx.TransportError as exc:
                outcome = exc
            step = exchange.next(outcome)
            if isinstance(step, httpx.Response):
                return exchange.result(step)
            self._sleep(step)

    def close(self) -> None:
        """Stop the background drain (what is spooled stays spooled) and close the connections."""
        self._stop.set()
        if self._drainer is not None:
            self._drainer.join(timeout=2 * self.config.timeout + 5)
        if self._owns_transport:
            self._http.close()
        if self._bridge is not None:
            self._bridge.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
