"""What goes over the wire: request parts and answers of the ingest and read routes."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from .. import __version__
from .batches import Batch
from .config import ClientConfig
from .errors import ConfigurationError, ServerError

INGEST_PATH = "/v1/ingest"
EVENTS_PATH = "/v1/events"
DOMAINS_PATH = "/v1/domains"
STREAM_PATH = "/v1/stream"
JSON = "application/json"
NDJSON = "application/x-ndjson"

# Picks the Idempotency-Key of a batch. Must return the same key for the same batch of the same
# input, and different keys for different batches.
KeyFor = Callable[[Batch], str]


@dataclass(frozen=True)
class Receipt:
    """A 2xx answer to one logical send (however many attempts it took); or, with
    `spooled=True`, the word that it is not stored yet but kept in the spool, to be sent later
    under the same `idempotency_key` (then `status` and `accepted` are 0)."""

    status: int
    accepted: int
    domain: str | None
    replayed: bool
    idempotency_key: str
    attempts: int
    spooled: bool = False


@dataclass
class SendSummary:
    """What `send_many` stored: `events` in `batches`; `replayed_batches` had been stored before
    (a re-run, or a retry after a lost answer) and were not written again; `spooled_batches`
    (`spooled_events`) are not stored yet but kept in the spool."""

    events: int = 0
    batches: int = 0
    replayed_batches: int = 0
    replayed_events: int = 0
    spooled_batches: int = 0
    spooled_events: int = 0

    def add(self, batch: Batch, receipt: Receipt) -> None:
        if receipt.spooled:
            self.spooled_batches += 1
            self.spooled_events += batch.events
            return
        self.events += batch.events
        self.batches += 1
        if receipt.replayed:
            self.replayed_batches += 1
            self.replayed_events += batch.events


@dataclass(frozen=True)
class Page:
    """Stored lines of a domain (each `\\n`-terminated) and the cursor to continue after them."""

    lines: list[bytes]
    cursor: str | None


def new_key() -> str:
    return str(uuid.uuid4())


def random_keys(batch: Batch) -> str:
    return new_key()


def http_options(config: ClientConfig) -> dict[str, Any]:
    """Keyword arguments for `httpx.Client` / `httpx.AsyncClient`."""
    options: dict[str, Any] = {
        "base_url": config.base_url,
        "headers": {"X-Auth": config.token, "User-Agent": f"leitstand-client/{__version__}"},
        "timeout": config.timeout,
    }
    if config.ca_file:
        try:
            options["verify"] = ssl.create_default_context(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"LEITSTAND_CA_FILE {config.ca_file!r} is not a PEM "
                                     f"bundle of certificates: {exc}") from None
    return options


def ingest_request(domain: str, body: bytes, content_type: str, key: str) -> dict[str, Any]:
    return {
        "params": {"domain": domain},
        "content": body,
        "headers": {"Content-Type": content_type, "Idempotency-Key": key},
    }


def receipt_of(response: httpx.Response, key: str, attempts: int) -> Receipt:
    accepted, domain = 0, None
    try:
        body = response.json()
    except ValueError:
        body = None  # the legacy route answers `ok`; any 2xx counts as stored
    if isinstance(body, dict):
        accepted = int(body.get("accepted") or 0)
        domain = body.get("domain")
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    return Receipt(response.status_code, accepted, domain, replayed, key, attempts)


def events_params(
    domain: str, cursor: str | None, limit: int | None, tail: int | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"domain": domain}
    if cursor is not None:
        params["cursor"] = cursor
    if limit is not None:
        params["limit"] = limit
    if tail is not None:
        params["tail"] = tail
    return params


def page_of(response: httpx.Response) -> Page:
    cursor = response.headers.get("x-next-cursor")
    if cursor is None:
        raise ServerError("the answer has no X-Next-Cursor header (is the read API there?)",
                          status=response.status_code)
    return Page(response.content.splitlines(keepends=True), cursor)


def domains_of(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        domains = response.json()["domains"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ServerError(f"unexpected answer from {DOMAINS_PATH}: {exc}",
                          status=response.status_code) from exc
    return list(domains)


def stream_request(domain: str, cursor: str | None, timeout: float) -> dict[str, Any]:
    """A long-lived `GET /v1/stream`: no read timeout, resumed after `cursor` if given."""
    headers = {"Accept": "text/event-stream"}
    if cursor is not None:
        headers["Last-Event-ID"] = cursor
    return {
        "params": {"domain": domain},
        "headers": headers,
        "timeout": httpx.Timeout(timeout, read=None),
    }


class StreamEnded(Exception):
    """The server ended an event stream on purpose (`event: disconnect`), with its reason."""


class SSEParser:
    """Server-sent events, fed line by line (without line endings): yields (id, data) per
    `message` event. `id` is the last id seen (None before any), as EventSource keeps it.
    An `event: disconnect` (the server ends the stream) raises `StreamEnded`."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._data: list[str] = []
        self._event = "message"

    def feed(self, line: str) -> tuple[str | None, str] | None:
        if not line:
            data, event = "\n".join(self._data), self._event
            had_data = bool(self._data)
            self._data, self._event = [], "message"
            if not had_data:
                return None
            if event == "disconnect":
                raise StreamEnded(f"the server ended the stream: {data}")
            return (self.last_id, data) if event == "message" else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value or "message"
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None

    def events(self, lines: Iterable[str]) -> Iterator[tuple[str | None, str]]:
        for line in lines:
            event = self.feed(line)
            if event is not None:
                yield event
