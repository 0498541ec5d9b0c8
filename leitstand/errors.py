"""The service's errors, all defined here: each carries its HTTP status and a reason label; the
one error boundary (leitstand/http/boundary.py) renders them as `{"detail": "..."}`.
(The Python client's own exceptions are in leitstand/client/errors.py.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LeitstandError(Exception):
    """Base class. `status` is the HTTP answer, `reason` a short label for metrics."""

    status = 500
    reason = "internal"

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more fields of the JSON answer, next to `detail`


class BadRequest(LeitstandError):
    status = 400
    reason = "bad_request"


class InvalidJSON(BadRequest):
    reason = "invalid_json"


class InvalidDomain(BadRequest):
    reason = "invalid_domain"


class DomainMismatch(BadRequest):
    reason = "domain_mismatch"


class BadCursor(BadRequest):
    reason = "bad_cursor"


class Unauthorized(LeitstandError):
    status = 401
    reason = "unauthorized"


class Forbidden(LeitstandError):
    """A known token used outside its scope (LEITSTAND_TOKENS_FILE)."""

    status = 403
    reason = "forbidden"


class NotFound(LeitstandError):
    status = 404
    reason = "not_found"


class Gone(LeitstandError):
    """A read cursor into a segment that retention has deleted; the answer carries
    `next_cursor`, the oldest retained line."""

    status = 410
    reason = "gone"


class BodyTimeout(LeitstandError):
    """The client did not send the whole body within LEITSTAND_BODY_TIMEOUT."""

    status = 408
    reason = "body_timeout"


class PayloadTooLarge(LeitstandError):
    status = 413
    reason = "too_large"


class UnsupportedMediaType(LeitstandError):
    status = 415
    reason = "unsupported_media_type"


class DomainCollision(LeitstandError):
    """A long domain whose shortened file name already belongs to another domain."""

    status = 409
    reason = "domain_collision"


class IdempotencyConflict(LeitstandError):
    status = 422
    reason = "idempotency_conflict"


class SchemaRejected(LeitstandError):
    """422: events of the batch do not match their domain's schema (leitstand/schemas)."""

    status = 422
    reason = "schema"


class SchemaNotApplicable(LeitstandError):
    """A schema that passed the load check cannot be applied (should not happen)."""

    reason = "schema_error"


class RateLimited(LeitstandError):
    status = 429
    reason = "rate_limited"


class Unavailable(LeitstandError):
    """Temporarily unable to store: the client should retry (after `Retry-After`)."""

    status = 503
    reason = "unavailable"


class LockTimeout(Unavailable):
    reason = "lock_timeout"


class StorageFailed(Unavailable):
    reason = "storage_error"


class BackendUnavailable(Unavailable):
    """The nats backend cannot reach NATS or its stream."""

    reason = "backend_unavailable"


class NotARegularFile(LeitstandError):
    """A name the store writes to is a directory, a FIFO or a symlink: refused."""

    status = 500
    reason = "not_a_regular_file"


class DiskFull(LeitstandError):
    status = 507
    reason = "disk_full"


class LowDiskSpace(DiskFull):
    """Refused before writing: it would leave less than LEITSTAND_MIN_FREE_BYTES free."""

    reason = "low_disk_space"
