"""The client's exceptions: one base, `IngestError`, carrying the HTTP status and the server's
`detail`. Built in one place, `error_for_response` / `error_for_exception`."""

from __future__ import annotations

import ssl
from typing import Any

import httpx


class IngestError(Exception):
    """Sending failed. `status` is the last HTTP status (None if no answer came), `detail` the
    server's `{"detail": ...}` (or a local reason), `attempts` how many requests were made;
    from `send_many`: `accepted`, the events earlier batches had stored, and the failed `batch`."""

    def __init__(
        self,
        detail: Any,
        *,
        status: int | None = None,
        attempts: int = 0,
        retry_after: float | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        self.detail = detail
        self.status = status
        self.attempts = attempts
        self.retry_after = retry_after
        self.headers = headers if headers is not None else httpx.Headers()
        self.accepted = 0
        self.batch: Any = None  # the `Batch` that failed, when sending many
        # A 422 for events that do not match their domain's schema: the server's first errors,
        # each {"index": <event in the batch, 0-based>, "path": <JSON Pointer>, "message"}.
        self.errors: list[dict[str, Any]] = []
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        prefix = f"{where}{tries}".strip()
        return f"{prefix}: {self.detail}" if prefix else str(self.detail)


class ConfigurationError(IngestError, ValueError):
    """The client is not configured (no token, a malformed setting)."""


class AuthError(IngestError):
    """401/403: `X-Auth` missing or wrong. Never retried."""


class RejectedError(IngestError):
    """The server (400, 404, 415, 422, other 4xx) or the client refused the input. Never retried."""


class TooLargeError(RejectedError):
    """413, or an event larger than the body limit on its own."""


class RateLimitedError(IngestError):
    """Still 429 after all retries (or a `Retry-After` longer than the client waits)."""


class ServerError(IngestError):
    """5xx (after retries where they make sense)."""


class NetworkError(IngestError):
    """No answer: connection failed, timed out or broke, after all retries."""


class TLSError(IngestError):
    """The https server's certificate is not trusted (or TLS failed otherwise). Never
    retried: set `LEITSTAND_CA_FILE` to the CA that signed it."""


def error_for_response(response: httpx.Response, *, attempts: int,
                       retry_after: float | None = None) -> IngestError:
    """The exception for a non-2xx answer."""
    status = response.status_code
    kind: type[IngestError]
    if status in (401, 403):
        kind = AuthError
    elif status == 413:
        kind = TooLargeError
    elif status == 429:
        kind = RateLimitedError
    elif status >= 500:
        kind = ServerError
    else:
        kind = RejectedError
    error = kind(detail_of(response), status=status, attempts=attempts,
                 retry_after=retry_after, headers=response.headers)
    error.errors = errors_of(response)
    return error


def error_for_exception(exc: Exception, *, attempts: int) -> IngestError:
    """The exception for a request that got no answer."""
    reason = str(exc) or type(exc).__name__
    tls = _tls_failure(exc)
    if tls is not None:
        reason = f"TLS failed: {tls}"
        if isinstance(tls, ssl.SSLCertVerificationError):
            reason += (" (the server's certificate is not trusted: set LEITSTAND_CA_FILE to "
                       "the CA that signed it)")
        return TLSError(reason, attempts=attempts)
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer, timed out ({type(exc).__name__}): {reason}"
    else:
        reason = f"no answer ({type(exc).__name__}): {reason}"
    return NetworkError(reason, attempts=attempts)


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The `errors` list of a schema rejection (422), else []."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind a transport error (httpx wraps it in httpcore's, in httpx's)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def detail_of(response: httpx.Response) -> Any:
    """The server's `detail`, else the body text (short), else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        return body["detail"]
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase
