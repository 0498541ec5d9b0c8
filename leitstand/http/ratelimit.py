"""Per-client-IP rate limiting (the `limits` library), shared by every ingest and read route."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from ..errors import RateLimited


@dataclass(frozen=True, slots=True)
class RateState:
    limit: int
    remaining: int
    reset_after: int  # seconds until a request is allowed again / the window frees up

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_after),
        }


class _SweptMemoryStorage(MemoryStorage):
    """`limits`' in-memory storage without its expiry timer thread.

    The stock storage starts a fresh `threading.Timer` after every 10 ms of traffic to drop
    expired entries, and each start parks the event loop until the new thread has run: under
    load about 100 thread starts a second, each waiting for the GIL (bench/notes.md). Here the
    same expiry runs inline, at most once a second. Expiry only bounds memory; whether a request
    is allowed never depends on it."""

    _SWEEP_EVERY = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # the private hook the base calls
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._SWEEP_EVERY
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class RateLimiter:
    """One moving window per client IP. The client IP is the TCP peer, or — only when the peer
    is a trusted proxy — the last untrusted address in `X-Forwarded-For`."""

    def __init__(self, spec: str, trusted_proxies: Iterable[str] = ()) -> None:
        self._item = parse(spec)
        self._limiter = MovingWindowRateLimiter(_SweptMemoryStorage())
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        ip = peer or "unknown"
        if not self._trusted or not forwarded_for or not self._is_trusted(ip):
            return ip
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if not _is_ip(hop):
                break
            ip = hop
            if not self._is_trusted(hop):
                break
        return ip

    def hit(self, client: str) -> RateState:
        """Count one request for `client`; raise `RateLimited` (with headers) when over."""
        allowed = self._limiter.hit(self._item, client)
        reset_at, remaining = self._limiter.get_window_stats(self._item, client)
        reset_after = max(1, math.ceil(reset_at - time.time()))
        state = RateState(self._item.amount, max(0, remaining), reset_after)
        if not allowed:
            raise RateLimited(
                "rate limit exceeded",
                headers={**state.headers(), "Retry-After": str(reset_after)},
            )
        return state

    def _is_trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self._trusted)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
