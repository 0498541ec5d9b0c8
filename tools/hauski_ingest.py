"""The hausKI helper from the spec: `ingest_event(domain, data)` → `"ok"` or an exception
(or `"spooled"`, with a spool).

A thin facade over `leitstand.client.Client`; settings not passed come from the environment
(`LEITSTAND_URL`, `LEITSTAND_TOKEN`, `LEITSTAND_TIMEOUT`, `LEITSTAND_RETRIES`,
`LEITSTAND_BACKOFF`, `LEITSTAND_SPOOL_DIR`, `LEITSTAND_CA_FILE`, ...), read at every call.
Retries reuse one Idempotency-Key, so a retried event is stored once. `transport` may be a
sync or an async httpx transport (e.g. `httpx.ASGITransport(app=app)` for tests without
sockets).
"""

from __future__ import annotations

import atexit
import threading
from collections import OrderedDict
from typing import Any

import httpx

from leitstand.client import Client, ClientConfig, IngestError

__all__ = ["IngestError", "ingest_event"]

# Calls without their own transport reuse a client (and its connection pool) per configuration.
# A process normally has one configuration; the bound keeps one that changes its settings (a
# rotated token, say) from piling up clients: the least recently used one is closed.
MAX_CLIENTS = 4


class _Clients:
    def __init__(self, size: int) -> None:
        self._size = size
        self._clients: OrderedDict[ClientConfig, Client] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, config: ClientConfig) -> Client:
        with self._lock:
            client = self._clients.get(config)
            if client is not None:
                self._clients.move_to_end(config)
                return client
            client = self._clients[config] = Client(config=config)
            evicted = []
            while len(self._clients) > self._size:
                evicted.append(self._clients.popitem(last=False)[1])
        for old in evicted:
            old.close()
        return client

    def __len__(self) -> int:
        return len(self._clients)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            client.close()


_clients = _Clients(MAX_CLIENTS)
atexit.register(_clients.close)


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
    """Store one event in `domain`. Returns "ok" once the server has it; with
    `LEITSTAND_SPOOL_DIR`, "spooled" when it could not be delivered now and waits in the spool
    (sent later, in order, stored once). Raises an `IngestError` subclass (with `.status` and
    `.detail`) otherwise, e.g. `SpoolFullError` when the spool has no room."""
    config = ClientConfig.resolve(url=url, token=token, timeout=timeout, retries=retries,
                                  backoff=backoff)
    if transport is not None:
        with Client(config=config, transport=transport) as client:
            receipt = client.send(domain, data)
    else:
        receipt = _clients.get(config).send(domain, data)
    return "spooled" if receipt.spooled else "ok"
