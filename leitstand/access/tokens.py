"""Named tokens with domain scopes, and the constant-time lookup of a presented secret.

A token is known by the SHA-256 digest of its secret only. The presented secret is hashed once
and compared with every entry's digest (`hmac.compare_digest`, no early exit), so neither the
time taken nor the answer tells which names exist or how close a guess came.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from ..domains import normalize_domain
from ..errors import InvalidDomain

ALL = "*"
DEFAULT_NAME = "default"  # the name of LEITSTAND_TOKEN's secrets
MAX_SECRET = 1024  # longer X-Auth values never match (they are not cut down first)


class PatternError(ValueError):
    """A domain pattern that is neither `*`, `<domain>.*` nor a domain."""


@dataclass(frozen=True, slots=True)
class DomainPatterns:
    """Domain patterns: `*` (every domain), `garten.*` (every domain below `garten`, not
    `garten` itself) or an exact domain; matched on normalised domains."""

    patterns: tuple[str, ...]
    everything: bool
    exact: frozenset[str]
    suffixes: tuple[str, ...]  # "garten.*" -> "garten."

    @classmethod
    def parse(cls, raw: Iterable[str]) -> DomainPatterns:
        patterns: list[str] = []
        exact: set[str] = set()
        prefixes: list[str] = []
        for item in raw:
            pattern = normalize_pattern(item)
            patterns.append(pattern)
            if pattern.endswith(".*"):
                prefixes.append(pattern[:-1])
            elif pattern != ALL:
                exact.add(pattern)
        return cls(tuple(patterns), ALL in patterns, frozenset(exact), tuple(prefixes))

    def matches(self, domain: str) -> bool:
        """`domain` must already be normalised (leitstand.domains.normalize_domain)."""
        return (self.everything or domain in self.exact
                or any(domain.startswith(prefix) for prefix in self.suffixes))

    def covers(self, pattern: str) -> bool:
        """Whether every domain `pattern` (a glob, e.g. a schema file's name) can match is
        matched here too; only judged for `*`, `name.*` and exact names — else False."""
        if self.everything or pattern in self.patterns:
            return True
        if pattern.endswith(".*") and "*" not in pattern[:-2]:
            return any(pattern[:-1].startswith(prefix) for prefix in self.suffixes)
        return "*" not in pattern and self.matches(pattern)

    def __bool__(self) -> bool:
        return bool(self.patterns)


def normalize_pattern(raw: object) -> str:
    """`*`, `<domain>.*` or `<domain>`, the domain part normalised; raise `PatternError`."""
    if not isinstance(raw, str):
        raise PatternError("a domain pattern must be a string")
    text = raw.strip().lower()
    if text == ALL:
        return ALL
    base = text[:-2] if text.endswith(".*") else text
    try:
        domain = normalize_domain(base)
    except InvalidDomain as exc:
        raise PatternError(
            f"{raw!r} is not a domain pattern: use '*', 'name.*' or a domain ({exc.detail})"
        ) from None
    return domain + ".*" if text.endswith(".*") else domain


@dataclass(frozen=True, slots=True)
class Token:
    """One named token. `digest` is the SHA-256 of its secret; the secret itself is never kept
    (but for LEITSTAND_TOKEN, which the settings hold anyway)."""

    name: str
    digest: bytes
    write: DomainPatterns
    read: DomainPatterns
    rate_limit: str | None = None
    expires: datetime | None = None
    line: int = 0  # where it is defined in the tokens file (0: LEITSTAND_TOKEN)

    def can_write(self, domain: str) -> bool:
        return self.write.matches(domain)

    def can_read(self, domain: str) -> bool:
        return self.read.matches(domain)

    @property
    def reads_everything(self) -> bool:
        return self.read.everything

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or datetime.now(timezone.utc)) >= self.expires

    def describe(self) -> dict[str, object]:
        """What the token may do, for the token itself (`GET /v1/whoami`): never the digest."""
        return {
            "name": self.name,
            "read": list(self.read.patterns),
            "write": list(self.write.patterns),
            "rate_limit": self.rate_limit,
            "expires": None if self.expires is None else rfc3339(self.expires),
        }


def digest_of(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def rfc3339(moment: datetime) -> str:
    text = moment.astimezone(timezone.utc).isoformat()
    return text.replace("+00:00", "Z")


def full_access(name: str, secret: bytes) -> Token:
    everything = DomainPatterns.parse([ALL])
    return Token(name=name, digest=digest_of(secret), write=everything, read=everything)


class TokenSet:
    """An immutable set of tokens, looked up by secret in constant time."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        self.tokens: tuple[Token, ...] = tuple(tokens)
        self._by_digest = {t.digest: t for t in self.tokens}

    def __len__(self) -> int:
        return len(self.tokens)

    def identify(self, secret: bytes) -> Token | None:
        """The token whose secret is `secret`, or None. Hashes once and compares the digest with
        every entry's (no early exit); a value longer than MAX_SECRET never matches."""
        presented = digest_of(secret)
        found: Token | None = None
        for token in self.tokens:
            if hmac.compare_digest(presented, token.digest):
                found = token
        return found if len(secret) <= MAX_SECRET else None

    def by_digest(self, digest: bytes) -> Token | None:
        """The current entry for an already identified token (re-checking an open stream)."""
        return self._by_digest.get(digest)

    def names(self) -> list[str]:
        return sorted({t.name for t in self.tokens})
