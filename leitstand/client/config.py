"""Client settings: from arguments, else from the environment, read when a client is built."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigurationError

DEFAULT_URL = "http://localhost:8788"
# The server's defaults (LEITSTAND_MAX_BODY, LEITSTAND_MAX_EVENTS); lower them if yours are lower.
DEFAULT_MAX_BODY = 1_048_576
DEFAULT_MAX_EVENTS = 10_000
DEFAULT_SPOOL_MAX_BYTES = 104_857_600


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to send. `retries` counts attempts after the first one."""

    url: str = DEFAULT_URL
    token: str = ""
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    # Wait at most this long for one `Retry-After`; a longer one gives up at once.
    max_retry_after: float = 120.0
    max_body: int = DEFAULT_MAX_BODY
    max_events: int = DEFAULT_MAX_EVENTS
    # Opt-in: a directory where batches wait that could not be delivered (see spool.py).
    spool_dir: str = ""
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    # A PEM bundle of CAs to trust for https (instead of the system's), e.g. a self-signed one.
    ca_file: str = ""

    @classmethod
    def resolve(
        cls, env: Mapping[str, str] | None = None, **given: Any
    ) -> ClientConfig:
        """Arguments that are not None win; the rest come from `LEITSTAND_*` in `env`
        (default: `os.environ`), else the defaults. Raises `ConfigurationError` if invalid."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = given.pop(field.name, None)
            if value is None:
                value = env.get(f"LEITSTAND_{field.name.upper()}") or None
            if value is not None:
                values[field.name] = _convert(field.name, value, field.default)
        if given:
            raise TypeError(f"unknown client settings: {', '.join(sorted(given))}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.token:
            raise ConfigurationError(
                "LEITSTAND_TOKEN is not set: export LEITSTAND_TOKEN=<the server's token> "
                "or pass the token explicitly"
            )
        if not self.token.isascii() or not self.token.isprintable():
            raise ConfigurationError("the token must be printable ASCII")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(f"LEITSTAND_URL must start with http:// or https://: "
                                     f"{self.url!r}")
        for name in ("timeout", "backoff", "max_backoff", "max_retry_after"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.retries < 0:
            raise ConfigurationError("retries must be 0 or more")
        if self.max_body < 2 or self.max_events < 1:
            raise ConfigurationError("max_body and max_events must be positive")
        if self.spool_max_bytes < 1:
            raise ConfigurationError("LEITSTAND_SPOOL_MAX_BYTES must be positive")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise ConfigurationError(f"LEITSTAND_CA_FILE {self.ca_file!r} is not a file")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")


def _convert(name: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if kind is str:
        return str(value)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"LEITSTAND_{name.upper()} must be a number, not {value!r}"
        ) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigurationError(f"LEITSTAND_{name.upper()} must be finite")
    return number
