"""`Access`: who is asking (X-Auth → a named token) and what that token may do.

The request path calls into it in a few places only: `identify` (in the shared guard of
every protected route), `require_write` (ingest, once the batch's domain is known),
`require_read` / `may_read` (the read routes), `stream_revoked` (an open stream re-checks its
token), `stored` and `rejected` (the metrics). The token set is LEITSTAND_TOKEN's secrets (name
`default`, full access) plus LEITSTAND_TOKENS_FILE, which is reloaded while the service runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from limits import parse
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import Request

from ..errors import Forbidden, RateLimited, Unauthorized
from ..http.ratelimit import MovingWindow
from ..metrics import CappedLabels, RequestCounter
from ..reloading import Reloadable, file_fingerprint, on_sighup
from .tokenfile import TokenFileError, load_token_file
from .tokens import DEFAULT_NAME, Token, TokenSet, full_access, rfc3339


class AccessMetrics:
    def __init__(self, registry: CollectorRegistry, max_names: int) -> None:
        self.names = CappedLabels(max_names)
        self.requests_by = RequestCounter("leitstand_token_requests", "Authenticated "
                                          "requests, by token name.", ["token"], registry)
        self.events_by = RequestCounter("leitstand_token_events", "Events stored, by token "
                                        "name.", ["token"], registry)
        self.rejections = Counter("leitstand_token_rejections", "Rejected requests of a known "
                                  "token (scope, rate limit, bad input...), by token name and "
                                  "reason.", ["token", "reason"], registry=registry)
        self.reload_failures = Counter("leitstand_tokens_reload_failures", "Reloads of "
                                       "LEITSTAND_TOKENS_FILE that failed (the previous tokens "
                                       "stay in force).", registry=registry)
        self.file_ok = Gauge("leitstand_tokens_file_ok", "1 if the tokens file in force is the "
                             "one on disk; 0 while a broken file is ignored.", registry=registry)
        self.loaded = Gauge("leitstand_tokens", "Tokens in force (LEITSTAND_TOKEN's and the "
                            "file's).", registry=registry)


class Access:
    """The tokens in force and the checks on them; one per app."""

    def __init__(self, secrets: Iterable[bytes], tokens_file: Path | None,
                 registry: CollectorRegistry, *, max_names: int = 100,
                 interval: float = 2.0, settle: float = 1.0) -> None:
        self._defaults = TokenSet(full_access(DEFAULT_NAME, s) for s in secrets)
        self.metrics = AccessMetrics(registry, max_names)
        self.loaded_at = self.failed_at = time.time()
        self._in_force = self._defaults
        self.file: Reloadable[TokenSet] | None = None
        if tokens_file is not None:

            def load() -> TokenSet:
                try:
                    return load_token_file(tokens_file)
                except TokenFileError as exc:
                    if self.file is None:
                        raise  # at start: refuse, naming the file (load_settings does so first)
                    raise ValueError(exc.short()) from None  # the log line names the file

            self.file = Reloadable(str(tokens_file), load,
                                   lambda: file_fingerprint(tokens_file), interval=interval,
                                   settle=settle, on_change=self._changed)
        self.metrics.loaded.set(len(self._in_force))
        if self.file is None:
            self.metrics.file_ok.set(1)  # no file, nothing broken
        self._windows: dict[str, MovingWindow] = {}  # per token name and limit

    # -- the set in force, and its reloading --------------------------------------------------
    def tokens(self) -> TokenSet:
        """The tokens in force (looks at the file at most every `interval` seconds)."""
        if self.file is not None:
            self.file.current()
        return self._in_force

    def _changed(self, from_file: TokenSet, error: str | None) -> None:
        if error is not None:
            self.failed_at = time.time()
            self.metrics.reload_failures.inc()
            self.metrics.file_ok.set(0)
            return
        self._in_force = TokenSet(self._defaults.tokens + from_file.tokens)
        self.loaded_at = time.time()
        self.metrics.loaded.set(len(self._in_force))
        self.metrics.file_ok.set(1)

    def reload_on_sighup(self) -> None:
        """Reload the tokens file on SIGHUP (call from the running loop, at startup)."""
        if self.file is not None:
            on_sighup(self.file.reload)

    def health(self) -> dict[str, Any] | None:
        """The tokens file's state for /health (no names, no path), or None without a file."""
        if self.file is None:
            return None
        self.file.current()  # a monitor polling /health sees a changed file, too
        error = self.file.error
        if error is None:
            return {"file": "ok", "loaded_at": rfc3339_epoch(self.loaded_at)}
        return {"file": "reload failed, previous tokens in force", "error": error,
                "failed_at": rfc3339_epoch(self.failed_at),
                "loaded_at": rfc3339_epoch(self.loaded_at)}

    # -- checks on the request path -------------------------------------------------------------
    def identify(self, given: list[bytes], state: dict[str, Any]) -> Token:
        """Exactly one X-Auth header (`given`: the values of all of them) naming a token in
        force, not expired, within its own rate limit; remembered in the request's `state`
        (`scope["state"]`: `token`, `token_name`). Raise 401 (429 for the token's limit)."""
        if len(given) != 1:
            raise Unauthorized("missing X-Auth header" if not given
                               else "more than one X-Auth header")
        token = self.tokens().identify(given[0])
        if token is None:
            raise Unauthorized("invalid X-Auth token")
        if token.expired():
            assert token.expires is not None
            raise Unauthorized(f"token expired at {rfc3339(token.expires)}")
        state["token"] = token
        state["token_name"] = token.name
        self.metrics.requests_by(self._label(token)).inc()
        if token.rate_limit is not None:
            self._hit_token_limit(token, token.rate_limit)
        return token

    def _hit_token_limit(self, token: Token, spec: str) -> None:
        window = self._windows.get(spec)  # one window per limit, keyed by token name
        if window is None:
            item = parse(spec)
            window = self._windows[spec] = MovingWindow(item.amount, item.get_expiry())
        allowed, _, frees_in = window.hit(token.name)
        if not allowed:
            raise RateLimited(f"rate limit of token '{token.name}' exceeded",
                              headers={"Retry-After": str(max(1, math.ceil(frees_in)))})

    def require_write(self, state: dict[str, Any], domain: str) -> None:
        """For ingest (`state`: the request's `scope["state"]`, after `identify`)."""
        token: Token = state["token"]
        if not token.can_write(domain):
            state["domain"] = domain  # the rejection record names the domain
            raise Forbidden(f"token '{token.name}' may not write domain '{domain}'")

    def require_read(self, request: Request, domain: str) -> None:
        token: Token = request.state.token
        if not token.can_read(domain):
            raise Forbidden(f"token '{token.name}' may not read domain '{domain}'")

    def require_some_read(self, request: Request) -> Token:
        token: Token = request.state.token
        if not token.read:
            raise Forbidden(f"token '{token.name}' may not read any domain")
        return token

    def require_read_or_write(self, request: Request, domain: str) -> None:
        """For what concerns a domain's producers and readers alike (its schema)."""
        token: Token = request.state.token
        if not (token.can_read(domain) or token.can_write(domain)):
            raise Forbidden(f"token '{token.name}' may neither read nor write domain "
                            f"'{domain}'")

    def may_see_pattern(self, request: Request, pattern: str) -> bool:
        """Whether the request's token may read or write everything `pattern` matches."""
        token: Token = request.state.token
        return token.read.covers(pattern) or token.write.covers(pattern)

    def may_read(self, request: Request, domain: str | None) -> bool:
        """Whether the request's token may see `domain` (None: not about one domain, which
        only a token that reads everything may see)."""
        token: Token = request.state.token
        return token.reads_everything if domain is None else token.can_read(domain)

    def stream_revoked(self, token: Token, domain: str) -> str | None:
        """Why an open stream of `token` on `domain` must end now (None: it may go on)."""
        current = self.tokens().by_digest(token.digest)
        if current is None:
            return f"token '{token.name}' was revoked"
        if current.expired():
            assert current.expires is not None
            return f"token expired at {rfc3339(current.expires)}"
        if not current.can_read(domain):
            return f"token '{current.name}' may no longer read domain '{domain}'"
        return None

    # -- records ------------------------------------------------------------------------------
    def stored(self, token: Token, events: int) -> None:
        self.metrics.events_by(self._label(token)).inc(events)

    def rejected(self, request: Request, reason: str) -> None:
        token: Token | None = getattr(request.state, "token", None)
        if token is not None:
            self.metrics.rejections.labels(self._label(token), reason).inc()

    def _label(self, token: Token) -> str:
        return self.metrics.names.label(token.name)


def rfc3339_epoch(seconds: float) -> str:
    return rfc3339(datetime.fromtimestamp(seconds, timezone.utc))
