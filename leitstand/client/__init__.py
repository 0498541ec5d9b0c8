"""The Python client: `Client` (sync) and `AsyncClient`, with one exception hierarchy.

    from leitstand.client import Client
    with Client() as client:                     # LEITSTAND_URL, LEITSTAND_TOKEN, ...
        client.send("aussen", {"event": "demo"})
        client.send_many("aussen", events)       # NDJSON batches within the server's limits
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
    TooLargeError,
)
from .protocol import Page, Receipt, SendSummary
from .sync import Client

__all__ = [
    "AsyncClient",
    "AuthError",
    "Batch",
    "Client",
    "ClientConfig",
    "ConfigurationError",
    "IngestError",
    "NetworkError",
    "Page",
    "RateLimitedError",
    "Receipt",
    "RejectedError",
    "SendSummary",
    "ServerError",
    "TooLargeError",
]
