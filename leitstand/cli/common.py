"""What the command modules share: the usage error, the failure line, connection options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..client import Client, ClientConfig


class UsageError(Exception):
    """Bad arguments or input: exit status 2."""


def fail(reason: str, *, status: int) -> int:
    print(f"leitstand: {' '.join(reason.split())}", file=sys.stderr)
    return status


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (default: the LEITSTAND_* environment)")
    group.add_argument("--url", help="default LEITSTAND_URL or http://localhost:8788")
    group.add_argument("--token", help="default LEITSTAND_TOKEN (prefer the environment: "
                       "arguments are visible to other users)")
    group.add_argument("--timeout", type=float, help="seconds per attempt (LEITSTAND_TIMEOUT, 5)")
    group.add_argument("--retries", type=int, help="retries after the first attempt "
                       "(LEITSTAND_RETRIES, 3)")
    group.add_argument("--backoff", type=float, help="first backoff in seconds "
                       "(LEITSTAND_BACKOFF, 0.5)")


def client_for(args: argparse.Namespace, **extra: Any) -> Client:
    config = ClientConfig.resolve(url=args.url, token=args.token, timeout=args.timeout,
                                  retries=args.retries, backoff=args.backoff, **extra)
    return Client(config=config)
