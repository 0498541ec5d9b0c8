"""Settings: read once from the environment and `.env`, validated, then passed around frozen."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated, Literal, NoReturn

from limits import parse_many
from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .units import parse_bytes, parse_optional_age, parse_optional_bytes

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class Settings(BaseSettings):
    """Every setting of the service. Field names map to `LEITSTAND_<NAME>` (except `LOG_LEVEL`)."""

    model_config = SettingsConfigDict(
        env_prefix="LEITSTAND_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # One token, or several separated by commas (rotation without downtime): full access,
    # under the name `default`. LEITSTAND_TOKENS_FILE adds named, scoped tokens.
    token: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    tokens_file: Path | None = None
    data_dir: Path = Path("data")
    max_body: int = Field(default=1_048_576, gt=0)
    max_events: int = Field(default=10_000, gt=0)
    lock_timeout: float = Field(default=30.0, gt=0)
    # A client that has not sent its whole body after this long gets 408 (slow-body clients).
    body_timeout: float = Field(default=30.0, gt=0)
    # A connection that has not sent a complete request head after this long gets 408 and is
    # closed; needs `--http leitstand.headertimeout:HeaderTimeoutProtocol` (slow-header clients).
    header_timeout: float = Field(default=10.0, gt=0)
    rate_limit: str = "60/minute"
    # The read routes' own per-IP budget, so that open web views never starve producers on the
    # same IP. One tab of the view makes ~28 requests a minute (leitstand/web/app.js).
    read_rate_limit: str = "300/minute"
    fsync: Literal["always", "off"] = "always"
    idempotency_window: float = Field(default=86_400.0, gt=0)
    idempotency_max_keys: int = Field(default=100_000, gt=0)
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    # Read side: a stream client that takes nothing for this long is disconnected.
    stream_send_timeout: float = Field(default=30.0, gt=0)
    # The data lifecycle (leitstand/store/): sizes take KiB/MiB/GiB, ages s/m/h/d.
    min_free_bytes: Annotated[int, BeforeValidator(parse_bytes), Field(ge=0)] = 64 * 1024**2
    rotate_bytes: Annotated[int | None, BeforeValidator(parse_optional_bytes)] = None
    rotate_age: Annotated[float | None, BeforeValidator(parse_optional_age)] = None
    # Unset: zstd when rotation is on, else none (see `compress_method`).
    compress: Literal["zstd", "gzip", "none"] | None = None
    retain_age: Annotated[float | None, BeforeValidator(parse_optional_age)] = None
    retain_bytes: Annotated[int | None, BeforeValidator(parse_optional_bytes)] = None
    # `leitstand sink` only: host:port of its own Prometheus endpoint (unset: none).
    sink_metrics_address: str | None = Field(default=None, pattern=r"^\[?[\w.:-]*\]?:\d{1,5}$")
    rejections_kept: int = Field(default=500, gt=0, le=100_000)
    # JSON Schemas per domain (leitstand/schemas/); unset: events are not checked.
    schema_dir: Path | None = None
    backend: Literal["jsonl", "nats"] = "jsonl"
    # The nats backend (leitstand/nats/); ignored with jsonl.
    nats_url: Annotated[tuple[str, ...], NoDecode] = ("nats://127.0.0.1:4222",)
    nats_stream: str = Field(default="leitstand", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    nats_replicas: int = Field(default=3, ge=1, le=5)
    nats_creds: Path | None = None
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_timeout: float = Field(default=5.0, gt=0)
    nats_max_age: float = Field(default=7 * 86_400.0, ge=0)
    nats_consumer: str = Field(default="leitstand-sink", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    log_level: LogLevel = Field(
        default="INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level")
    )

    @field_validator("token", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if value == ():
            return value  # not set (LEITSTAND_TOKENS_FILE may be)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, (list, tuple)):
            parts = [str(v.get_secret_value() if isinstance(v, SecretStr) else v) for v in value]
            parts = [p for p in parts if p]
            if not parts:
                raise ValueError("must not be empty")
            for part in parts:
                if not part.isascii() or not part.isprintable():
                    raise ValueError("tokens must be printable ASCII")
            return tuple(parts)
        return value

    @field_validator("rate_limit", "read_rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        try:
            items = parse_many(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a rate limit in `limits` notation, e.g. 60/minute"
            ) from exc
        if len(items) != 1:
            raise ValueError(f"{value!r}: give exactly one limit, e.g. 60/minute")
        if items[0].amount < 1:
            raise ValueError(f"{value!r}: the limit must allow at least one request")
        return value

    @field_validator("schema_dir")
    @classmethod
    def _check_schema_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{str(value)!r} is not a directory (one <domain>.schema.json "
                             "per domain)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            for part in value:
                ipaddress.ip_network(str(part), strict=False)
            return tuple(str(p) for p in value)
        return value

    @field_validator("nats_url", mode="before")
    @classmethod
    def _split_nats_urls(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("must name at least one server, e.g. nats://127.0.0.1:4222")
            return tuple(str(v) for v in value)
        return value

    @model_validator(mode="after")
    def _some_token(self) -> Settings:
        if not self.token and self.tokens_file is None:
            raise ValueError(_NO_TOKEN)
        return self

    def compress_method(self) -> str:
        """How closed segments are compressed: as set, else zstd when rotation is on."""
        if self.compress is not None:
            return self.compress
        return "zstd" if self.rotate_bytes or self.rotate_age else "none"

    def token_bytes(self) -> tuple[bytes, ...]:
        return tuple(t.get_secret_value().encode("ascii") for t in self.token)


_ENV_NAMES = {"log_level": "LOG_LEVEL"}
_HOW_TO_SET_TOKEN = (
    "It is the shared secret clients send as X-Auth: "
    "export LEITSTAND_TOKEN=$(openssl rand -hex 16), or put LEITSTAND_TOKEN=... into .env "
    "(see .env.example)."
)
_NO_TOKEN = (
    "LEITSTAND_TOKEN is not set, and neither is LEITSTAND_TOKENS_FILE. Set either or both: "
    + _HOW_TO_SET_TOKEN + " For named tokens with scopes: "
    "export LEITSTAND_TOKENS_FILE=/etc/leitstand/tokens.toml "
    "(create entries with `leitstand token new NAME --write 'DOMAIN' --read 'DOMAIN'`)."
)


def env_name(field: str) -> str:
    """The environment variable that sets `field` (a field name or its alias)."""
    field = field.lower()
    return _ENV_NAMES.get(field, f"LEITSTAND_{field.upper()}")


def describe_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a check across fields: its message says it all
            lines.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        field = str(err["loc"][0])
        name = env_name(field)
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            lines.append(f"{name} is not set. {_HOW_TO_SET_TOKEN}" if field == "token"
                         else f"{name} is required.")
        elif field == "token":
            lines.append(f"{name} is invalid: {message}. {_HOW_TO_SET_TOKEN}")
        else:
            lines.append(f"{name} is invalid: {message}")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read the environment and `.env`, and create the data directory; raise `SystemExit` with
    a readable message if a setting is invalid or the directory cannot be created."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        refuse_to_start(describe_errors(exc))
    if settings.tokens_file is not None:
        from .access.tokenfile import TokenFileError, load_token_file

        try:
            load_token_file(settings.tokens_file)
        except TokenFileError as exc:
            refuse_to_start(f"{env_name('tokens_file')} is invalid: {exc}")
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        refuse_to_start(f"{env_name('data_dir')} is invalid: cannot create "
                        f"{str(settings.data_dir)!r}: {exc.strerror or exc}")
    return settings


def refuse_to_start(reason: str) -> NoReturn:
    """Exit 2 with `reason` on stderr: a setting is missing or wrong (every entry point)."""
    print("leitstand: cannot start:\n" + reason, file=sys.stderr)
    raise SystemExit(2) from None
