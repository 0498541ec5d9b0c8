"""Per-client-IP rate limiting, shared by every ingest and read route: a moving window in the
`limits` notation (`60/minute`, parsed by `limits`)."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from limits import parse

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

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as an ASGI answer carries them (the names as Starlette writes them)."""
        return [
            (b"x-ratelimit-limit", b"%d" % self.limit),
            (b"x-ratelimit-remaining", b"%d" % self.remaining),
            (b"x-ratelimit-reset", b"%d" % self.reset_after),
        ]


class MovingWindow:
    """At most `amount` hits per key in any `seconds`-long window: `limits`' moving window,
    kept in process and swept inline.

    Each key keeps the times of its hits inside the window (a deque of at most `amount`), so a
    hit costs O(1) amortised and no thread. `limits`' own in-memory storage would start a
    `threading.Timer` after every 10 ms of traffic to expire entries, and each start parks the
    event loop until the new thread has run (bench/notes.md); overriding its private hook for
    that was not a supported use. Keys idle for a whole window are dropped, in a sweep at most
    once a second: expiry only bounds memory, whether a hit is allowed never depends on it.
    Not thread-safe: call it from the event loop only.
    """

    _SWEEP_EVERY = 1.0

    def __init__(self, amount: int, seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.amount = amount
        self.seconds = seconds
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._next_sweep = clock() + self._SWEEP_EVERY

    def hit(self, key: str) -> tuple[bool, int, float]:
        """Count a hit for `key` if the window has room. Returns (allowed, remaining, seconds
        until the window frees up: until its oldest hit leaves it)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.amount)
        start = now - self.seconds
        while hits and hits[0] <= start:
            hits.popleft()
        allowed = len(hits) < self.amount
        if allowed:
            hits.append(now)
        oldest = hits[0] if hits else now
        return allowed, self.amount - len(hits), oldest + self.seconds - now

    def __len__(self) -> int:
        """Keys held (for tests: memory stays bounded)."""
        return len(self._hits)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._SWEEP_EVERY
        start = now - self.seconds
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= start]:
            del self._hits[key]


class RateLimiter:
    """One moving window per client IP. The client IP is the TCP peer, or — only when the peer
    is a trusted proxy — the last untrusted address in `X-Forwarded-For`."""

    def __init__(self, spec: str, trusted_proxies: Iterable[str] = ()) -> None:
        item = parse(spec)
        self._window = MovingWindow(item.amount, item.get_expiry())
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
        allowed, remaining, frees_in = self._window.hit(client)
        reset_after = max(1, math.ceil(frees_in))
        state = RateState(self._window.amount, remaining, reset_after)
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
