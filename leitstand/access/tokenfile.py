"""The tokens file (LEITSTAND_TOKENS_FILE): TOML, one `[[token]]` table per token.

    [[token]]
    name = "garten-sensor"
    sha256 = "<hex digest of the secret>"   # leitstand token new ... prints it
    write = ["garten.*"]
    read = []
    rate_limit = "30/minute"                # optional, per token
    expires = 2027-06-01T00:00:00Z          # optional, RFC 3339

Every problem is reported with the file, the line and what is wrong, never with a digest.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from limits import parse_many

from .tokens import DEFAULT_NAME, DomainPatterns, PatternError, Token, TokenSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TABLE = "token"
_KEYS = {"name", "sha256", "write", "read", "rate_limit", "expires"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")
_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*" + TABLE + r"[ \t]*\]\]", re.M)
_AT_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)$")


class TokenFileError(ValueError):
    """The file cannot be used; `line` is 1-based (0: the file as a whole)."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__(f"{path}, line {line}: {problem}" if line else f"{path}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem

    def short(self) -> str:
        """Line and problem, without the path (for the public /health detail)."""
        return f"line {self.line}: {self.problem}" if self.line else self.problem


def load_token_file(path: Path) -> TokenSet:
    """Read and parse `path`; raise `TokenFileError` (unreadable, not TOML, invalid entry)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenFileError(str(path), 0, f"cannot read it: {exc.strerror or exc}") from None
    return parse_token_file(data, str(path))


def parse_token_file(data: bytes, path: str) -> TokenSet:
    if not data.strip():
        raise TokenFileError(path, 0, "the file is empty (a file without tokens needs at "
                             "least a comment, so that a half-written file is never taken)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TokenFileError(path, line, "not UTF-8") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _AT_LINE.search(message)
        line = int(match.group(1)) if match else 0
        raise TokenFileError(path, line, f"not valid TOML: {_AT_LINE.sub('', message)}") from None
    return TokenSet(_entries(document, text, path))


def _entries(document: dict[str, Any], text: str, path: str) -> list[Token]:
    for key in document:
        if key != TABLE:
            raise TokenFileError(path, _key_line(text, 0, len(text), key),
                                 f"unknown key {key!r}: tokens are [[{TABLE}]] tables")
    raw = document.get(TABLE, [])
    if not isinstance(raw, list):
        raise TokenFileError(path, _key_line(text, 0, len(text), TABLE),
                             f"{TABLE!r} must be [[{TABLE}]] tables")
    headers = [m.start() for m in _HEADER.finditer(text)]
    tokens: list[Token] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for index, entry in enumerate(raw):
        start = headers[index] if index < len(headers) else 0
        end = headers[index + 1] if index + 1 < len(headers) else len(text)
        entry_line = text.count("\n", 0, start) + 1 if index < len(headers) else 0

        def fail(problem: str, key: str | None = None, start: int = start, end: int = end,
                 entry_line: int = entry_line) -> TokenFileError:
            line = _key_line(text, start, end, key) if key else entry_line
            return TokenFileError(path, line or entry_line, problem)

        token = _token(entry, fail, entry_line)
        if token.name in names:
            raise fail(f"name {token.name!r} is used twice (also at line {names[token.name]})",
                       "name")
        if token.digest in digests:
            raise fail(f"the same sha256 as the token at line {digests[token.digest]}", "sha256")
        names[token.name] = digests[token.digest] = entry_line
        tokens.append(token)
    return tokens


def _token(entry: object, fail: Any, line: int) -> Token:
    if not isinstance(entry, dict):
        raise fail(f"each [[{TABLE}]] must be a table")
    for key in entry:
        if key not in _KEYS:
            raise fail(f"unknown key {key!r} (known: {', '.join(sorted(_KEYS))})", key)
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail("name must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter "
                   "or digit)", "name" if "name" in entry else None)
    if name == DEFAULT_NAME:
        raise fail(f"the name {DEFAULT_NAME!r} is reserved for LEITSTAND_TOKEN", "name")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _HEX.fullmatch(digest.strip().lower()):
        raise fail("sha256 must be the 64 hex digits of the token's SHA-256 digest "
                   "(leitstand token new prints it)", "sha256" if "sha256" in entry else None)
    scopes = {}
    for key in ("write", "read"):
        value = entry.get(key, [])
        if not isinstance(value, list):
            raise fail(f"{key} must be a list of domain patterns, e.g. [\"garten.*\"]", key)
        try:
            scopes[key] = DomainPatterns.parse(value)
        except PatternError as exc:
            raise fail(f"{key}: {exc}", key) from None
    if not scopes["write"] and not scopes["read"]:
        raise fail("the token may do nothing: give write and/or read patterns")
    return Token(
        name=name,
        digest=bytes.fromhex(digest.strip().lower()),
        write=scopes["write"],
        read=scopes["read"],
        rate_limit=_rate_limit(entry.get("rate_limit"), fail),
        expires=_expires(entry.get("expires"), fail),
        line=line,
    )


def _rate_limit(value: object, fail: Any) -> str | None:
    if value is None:
        return None
    try:
        items = parse_many(value) if isinstance(value, str) else []
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise fail("rate_limit must be one limit in `limits` notation, e.g. \"30/minute\"",
                   "rate_limit")
    return str(value)


def _expires(value: object, fail: Any) -> datetime | None:
    if value is None:
        return None
    moment: object = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if not isinstance(moment, datetime) or moment.tzinfo is None:  # a TOML date is a `date`
        raise fail("expires must be an RFC 3339 time with an offset, e.g. "
                   "2027-06-01T00:00:00Z", "expires")
    return moment


def _key_line(text: str, start: int, end: int, key: str) -> int:
    """The line of `key = ...` between offsets `start` and `end` (0: not found)."""
    name = r"[\"']?" + re.escape(key) + r"[\"']?"
    pattern = re.compile(rf"^[ \t]*(?:{name}[ \t]*=|\[+[ \t]*{name}[ \t]*\])", re.M)
    match = pattern.search(text, start, end)
    return text.count("\n", 0, match.start()) + 1 if match else 0
