"""The Python client: `Client` (sync) and `AsyncClient`, with one exception hierarchy.

    from leitstand.client import Client
    with Client() as client:                     # LEITSTAND_URL, LEITSTAND_TOKEN, ...
        client.send("aussen", {"event": "demo"})
        client.send_many("aussen", events)       # NDJSON batches within the server's limits

With LEITSTAND_SPOOL_DIR, what cannot be delivered now is kept on disk and sent later
(`Receipt.spooled`); see `spooling.py`.
"""

from .async_client import AsyncClient
from .batches import Batch
from .config import ClientConfig
from .errors import (
    AuthError,
    ConfigurationError,
    IngestError,
    NetworkError,
    RateLimitedError,
    RejectedError,
    ServerError,
    TLSError,
    TooLargeError,
)
from .protocol import Page, Receipt, SendSummary
from .spool import Spool, SpoolFullError, SpoolStatus
from .spooling import Drain
from .sync import Client

__all__ = [
    "AsyncClient",
    "AuthError",
    "Batch",
    "Client",
    "ClientConfig",
    "ConfigurationError",
    "Drain",
    "IngestError",
    "NetworkError",
    "Page",
    "RateLimitedError",
    "Receipt",
    "RejectedError",
    "SendSummary",
    "ServerError",
    "Spool",
    "SpoolFullError",
    "SpoolStatus",
    "TLSError",
    "TooLargeError",
]
