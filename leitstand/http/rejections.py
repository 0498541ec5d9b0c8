"""The last N rejected requests, for `GET /v1/rejections` and the web view.

Filled at the one error boundary (boundary.py). A record holds when, who (client IP and, once it
is known, the token's name), where (route and, if known, domain), the status and the reason the
client was given — never a secret, other headers, or the body.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from ..domains import normalize_domain
from ..errors import InvalidDomain

_MAX_ROUTE = 200
_MAX_REASON = 300
_MAX_ERRORS = 5  # of a schema rejection's errors, the first few are kept


@dataclass(frozen=True, slots=True)
class Rejection:
    time: float
    client: str
    route: str
    domain: str | None
    status: int
    reason: str
    errors: tuple[dict[str, Any], ...] = ()  # a schema rejection's first errors
    token: str | None = None  # the name of the token, if it was valid

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": iso_time(self.time),
            "client": self.client,
            "route": self.route,
            "domain": self.domain,
            "status": self.status,
            "reason": self.reason,
            "token": self.token,
        }
        if self.errors:
            out["errors"] = list(self.errors)
        return out


class Rejections:
    """A ring buffer of the last `size` rejections (thread-safe, O(1) per record)."""

    def __init__(self, size: int) -> None:
        self._items: deque[Rejection] = deque(maxlen=size)
        self._lock = threading.Lock()

    def record(self, request: Request, status: int, reason: str,
               errors: Sequence[dict[str, Any]] = ()) -> None:
        client = getattr(request.state, "client_ip", None) or (
            request.client.host if request.client else "unknown"
        )
        item = Rejection(
            time=time.time(),
            client=client,
            route=request.url.path[:_MAX_ROUTE],
            domain=_known_domain(request),
            status=status,
            reason=reason[:_MAX_REASON],
            errors=tuple(errors[:_MAX_ERRORS]),
            token=getattr(request.state, "token_name", None),
        )
        with self._lock:
            self._items.append(item)

    def latest(self, limit: int,
               visible: Callable[[Rejection], bool] = lambda _: True) -> list[Rejection]:
        """Newest first, only those `visible` says the asker may see."""
        with self._lock:
            items = list(self._items)
        return [r for r in reversed(items) if visible(r)][:limit]


def _known_domain(request: Request) -> str | None:
    """The domain the request named (path or `?domain=`), normalised; None if absent/invalid."""
    domain = getattr(request.state, "domain", None)
    if domain is None:
        domain = request.path_params.get("domain") or request.query_params.get("domain")
    if domain is None:
        return None
    try:
        return normalize_domain(domain)
    except InvalidDomain:
        return None


def iso_time(timestamp: float) -> str:
    """RFC 3339 UTC with milliseconds: `2026-11-26T11:00:00.123Z`."""
    seconds = int(timestamp)
    millis = int((timestamp - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
