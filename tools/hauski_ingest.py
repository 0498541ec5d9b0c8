"""The hausKI helper from the spec: `ingest_event(domain, data)` → `"ok"` or an exception.

A thin facade over `leitstand.client.Client`; settings not passed come from the environment
(`LEITSTAND_URL`, `LEITSTAND_TOKEN`, `LEITSTAND_TIMEOUT`, `LEITSTAND_RETRIES`,
`LEITSTAND_BACKOFF`), read at every call. Retries reuse one Idempotency-Key, so a retried event
is stored once. `transport` may be a sync or an async httpx transport
(e.g. `httpx.ASGITransport(app=app)` for tests without sockets).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from leitstand.client import Client, ClientConfig, IngestError

__all__ = ["IngestError", "ingest_event"]

# One client (and connection pool) per configuration, for calls without their own transport.
_clients: dict[ClientConfig, Client] = {}
_clients_lock = threading.Lock()


def ingest_event(
    domain: str,
    data: dict[str, Any],
    *,
    url: str | None = None,
    token: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
) -> str:
    """Store one event in `domain`. Returns "ok" once the server has it; raises an
    `IngestError` subclass (with `.status` and `.detail`) otherwise."""
    config = ClientConfig.resolve(url=url, token=token, timeout=timeout, retries=retries,
                                  backoff=backoff)
    if transport is not None:
        with Client(config=config, transport=transport) as client:
            client.send(domain, data)
        return "ok"
    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            client = _clients[config] = Client(config=config)
    client.send(domain, data)
    return "ok"
