"""When to try again and how long to wait: exponential backoff with jitter, `Retry-After` first.

Shared by the sync and the async client; they only differ in how they sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime

import httpx

from .config import ClientConfig
from .errors import IngestError, TLSError, error_for_exception, error_for_response

# Statuses worth another attempt of the same request. Not 409: the server answers a retry that
# overtakes an earlier attempt with the same Idempotency-Key by waiting for that attempt.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Failures where the request may or may not have reached the server; the Idempotency-Key makes
# a retry safe either way. Other transport errors (a malformed URL, ...) are not retried.
RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass
class RetryPolicy:
    """Decides, attempt by attempt, whether to give up (an `IngestError`) or wait (seconds)."""

    retries: int
    backoff: float
    max_backoff: float
    max_retry_after: float
    rand: Callable[[], float] = field(default=random.random)
    now: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_config(cls, config: ClientConfig) -> RetryPolicy:
        return cls(config.retries, config.backoff, config.max_backoff, config.max_retry_after)

    def backoff_delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (0-based): backoff·2^retry, capped, then jittered
        down to between half and all of it, so that many clients do not retry in step."""
        base = min(self.max_backoff, self.backoff * (2.0 ** retry))
        return base * (0.5 + 0.5 * self.rand())

    def verdict(
        self, attempt: int, outcome: httpx.Response | Exception
    ) -> tuple[IngestError, float | None]:
        """For a failed `attempt` (1-based): the error to raise, and the delay before the next
        attempt, or None to raise the error now."""
        if isinstance(outcome, Exception):
            error = error_for_exception(outcome, attempts=attempt)
            retryable = isinstance(outcome, RETRY_EXCEPTIONS) and not isinstance(error, TLSError)
            retry_after = None
        else:
            retry_after = parse_retry_after(outcome.headers.get("retry-after"), self.now())
            error = error_for_response(outcome, attempts=attempt, retry_after=retry_after)
            retryable = outcome.status_code in RETRY_STATUSES
        if not retryable or attempt > self.retries:
            return error, None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return error, None
            return error, retry_after
        return error, self.backoff_delay(attempt - 1)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": the RFC 5322 way of saying "UTC, origin unknown"
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)
