"""`leitstand token`: create a named token (`new`) and validate a tokens file (`check`)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..access.tokenfile import TokenFileError, load_token_file, parse_token_file
from ..access.tokens import digest_of, rfc3339
from .common import UsageError

_SECRET_BYTES = 32  # 256 bits; token_urlsafe makes 43 characters of them


def register(commands: Any) -> None:
    token = commands.add_parser("token", help="create named tokens, check a tokens file",
                                description="Named, scoped tokens for LEITSTAND_TOKENS_FILE.")
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    new = actions.add_parser(
        "new", help="print a fresh token and its entry for the tokens file",
        description="Print a fresh random token (on stderr, shown only this once) and the "
        "[[token]] entry holding its SHA-256 (on stdout, so `>> tokens.toml` appends it).")
    new.add_argument("name")
    new.add_argument("--write", action="append", default=[], metavar="PATTERN",
                     help="a domain pattern it may write: '*', 'garten.*' or a domain "
                     "(repeat for more)")
    new.add_argument("--read", action="append", default=[], metavar="PATTERN",
                     help="a domain pattern it may read (repeat for more)")
    new.add_argument("--rate-limit", help="its own limit, e.g. 30/minute")
    new.add_argument("--expires", help="RFC 3339 time, e.g. 2027-06-01T00:00:00Z")
    new.set_defaults(run=run_new)
    check = actions.add_parser("check", help="validate a tokens file",
                               description="Parse FILE as LEITSTAND_TOKENS_FILE would be; "
                               "exit 2 naming the line and the problem if it is invalid.")
    check.add_argument("file", type=Path)
    check.set_defaults(run=run_check)


def run_new(args: argparse.Namespace) -> int:
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    entry = token_entry(args.name, digest_of(secret.encode("ascii")).hex(), write=args.write,
                        read=args.read, rate_limit=args.rate_limit, expires=args.expires)
    try:
        parse_token_file(entry.encode("utf-8"), "the new entry")
    except TokenFileError as exc:
        raise UsageError(exc.problem) from None
    print(f"token for {args.name!r} (shown only now; the file keeps only its hash):\n{secret}",
          file=sys.stderr)
    sys.stdout.write(entry)
    return 0


def token_entry(name: str, sha256: str, *, write: list[str], read: list[str],
                rate_limit: str | None = None, expires: str | None = None) -> str:
    """One [[token]] table (TOML basic strings are JSON strings for these plain values)."""
    lines = ["", "[[token]]", f"name = {json.dumps(name)}", f'sha256 = "{sha256}"',
             f"write = {json.dumps(write)}", f"read = {json.dumps(read)}"]
    if rate_limit is not None:
        lines.append(f"rate_limit = {json.dumps(rate_limit)}")
    if expires is not None:
        lines.append(f"expires = {json.dumps(expires)}")
    return "\n".join(lines) + "\n"


def run_check(args: argparse.Namespace) -> int:
    try:
        tokens = load_token_file(args.file)
    except TokenFileError as exc:
        raise UsageError(str(exc)) from None
    now = datetime.now(timezone.utc)
    print(f"{args.file}: {len(tokens)} token(s)")
    if args.file.stat().st_mode & 0o022:
        # Whoever may write the file may add a token of their own with every right.
        print(f"warning: {args.file} is writable by group or others (chmod go-w)")
    for token in tokens.tokens:
        notes = [f"write {list(token.write.patterns)}", f"read {list(token.read.patterns)}"]
        if token.rate_limit:
            notes.append(f"rate limit {token.rate_limit}")
        if token.expires is not None:
            notes.append(("EXPIRED at " if token.expired(now) else "expires ")
                         + rfc3339(token.expires))
        print(f"  line {token.line}: {token.name}: {', '.join(notes)}")
    return 0
