"""The client without I/O: what to send, whether to try again, and what an answer means.

`Client` and `AsyncClient` drive the same objects and differ only in how they make the HTTP
call and how they sleep, as the Rust crate does with its `send::Request`/`Next`:

    exchange = ingest_event(policy, domain, event, key)
    while True:
        outcome = <send exchange.method, exchange.path, **exchange.options; a TransportError
                   is the outcome too>
        step = exchange.next(outcome)     # raises the IngestError when it gives up
        if isinstance(step, httpx.Response):
            return exchange.result(step)
        <sleep step seconds>
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx

from .batches import Batch, encode_event
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
    ingest_request,
    new_key,
    page_of,
    random_keys,
    receipt_of,
    stream_request,
)
from .retry import RetryPolicy

Outcome = httpx.Response | Exception
T = TypeVar("T")


class Exchange(Generic[T]):
    """One logical request and its retries: the same method, URL, headers (so one
    Idempotency-Key) and body on every attempt; `result` reads the successful answer."""

    def __init__(self, policy: RetryPolicy, method: str, path: str,
                 read: Callable[[httpx.Response], T], **options: Any) -> None:
        self.method = method
        self.path = path
        self.options = options
        self.attempts = 0
        self._policy = policy
        self._read = read

    def next(self, outcome: Outcome) -> httpx.Response | float:
        """After one attempt: the answer if it is a success; else the seconds to wait before
        the next attempt. Raises the `IngestError` when it gives up."""
        self.attempts += 1
        if isinstance(outcome, httpx.Response) and outcome.is_success:
            return outcome
        return give_up_or_wait(self._policy, self.attempts, outcome)

    def result(self, response: httpx.Response) -> T:
        return self._read(response)


class Ingest(Exchange[Receipt]):
    """`POST /v1/ingest` of one body under one Idempotency-Key."""

    def __init__(self, policy: RetryPolicy, domain: str, body: bytes, content_type: str,
                 key: str) -> None:
        super().__init__(policy, "POST", INGEST_PATH, self._receipt,
                         **ingest_request(domain, body, content_type, key))
        self.domain = domain
        self.body = body
        self.content_type = content_type
        self.key = key

    def _receipt(self, response: httpx.Response) -> Receipt:
        return receipt_of(response, self.key, self.attempts)


def ingest_event(policy: RetryPolicy, domain: str, event: Any, key: str | None) -> Ingest:
    """Sending one event (a dict) as JSON, under `key` or a new one."""
    return Ingest(policy, domain, encode_event(event), JSON, key or new_key())


def read_events(policy: RetryPolicy, domain: str, cursor: str | None, limit: int | None,
                tail: int | None) -> Exchange[Page]:
    return Exchange(policy, "GET", EVENTS_PATH, page_of,
                    params=events_params(domain, cursor, limit, tail))


def read_domains(policy: RetryPolicy) -> Exchange[list[dict[str, Any]]]:
    return Exchange(policy, "GET", DOMAINS_PATH, domains_of)


def give_up_or_wait(policy: RetryPolicy, attempt: int, outcome: Outcome) -> float:
    error, delay = policy.verdict(attempt, outcome)
    if delay is None:
        raise error from (outcome if isinstance(outcome, Exception) else None)
    return delay


class Follow:
    """The state of one `follow`: where to resume, the event parser of the current connection,
    and the failed attempts since the last event. Per connection: `start()` for the request,
    `feed()` for every line, then `next()` with how the connection ended."""

    def __init__(self, policy: RetryPolicy, domain: str, cursor: str | None,
                 timeout: float) -> None:
        self.cursor = cursor
        self._policy = policy
        self._domain = domain
        self._timeout = timeout
        self._failures = 0
        self._parser = SSEParser()

    def start(self) -> tuple[str, str, dict[str, Any]]:
        """Method, path and options of the next connection (resumed after the cursor)."""
        self._parser = SSEParser()
        return "GET", STREAM_PATH, stream_request(self._domain, self.cursor, self._timeout)

    def feed(self, line: str) -> tuple[str, bytes] | None:
        """One line of the stream → (cursor after the stored line, the line), or None."""
        event = self._parser.feed(line)
        if event is None:
            return None
        self._failures = 0
        if event[0] is not None:
            self.cursor = event[0]
        return self.cursor or "", event[1].encode() + b"\n"

    def next(self, outcome: Outcome) -> float:
        """After a connection ended: seconds before reconnecting; raises when giving up."""
        if isinstance(outcome, StreamEnded):
            outcome = httpx.RemoteProtocolError(str(outcome))
        elif isinstance(outcome, httpx.Response) and outcome.is_success:
            outcome = httpx.RemoteProtocolError("the server ended the stream")
        self._failures += 1
        return give_up_or_wait(self._policy, self._failures, outcome)


class Progress:
    """The batches of one `send_many`: each one's request (its key from `key_for`), and what
    is stored so far, so that a failure can say it: the raised error gets `accepted` (events
    stored by earlier batches) and `batch` (the one that failed)."""

    def __init__(self, policy: RetryPolicy, domain: str, key_for: KeyFor | None) -> None:
        self.summary = SendSummary()
        self._policy = policy
        self._domain = domain
        self._key_for = key_for or random_keys
        self._current: Batch | None = None

    def sending(self, batch: Batch) -> Ingest:
        self._current = batch
        return Ingest(self._policy, self._domain, batch.body, NDJSON, self._key_for(batch))

    def stored(self, batch: Batch, receipt: Receipt) -> None:
        self.summary.add(batch, receipt)
        self._current = None

    def failed(self, error: IngestError) -> None:
        if self._current is not None:
            error.batch = self._current
        error.accepted = self.summary.events
