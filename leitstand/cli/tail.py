"""`leitstand tail`: a domain's last events, and with -f the ones that follow."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import UsageError, add_connection_options, client_for


def register(commands: Any) -> None:
    tail = commands.add_parser("tail", help="print a domain's last events; -f to follow",
                               description="Print the last stored lines of DOMAIN (read API).")
    tail.add_argument("domain")
    tail.add_argument("-n", "--lines", type=int, default=10, help="how many (default 10)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new events as they are stored")
    add_connection_options(tail)
    tail.set_defaults(run=run_tail)


def run_tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UsageError("-n must be 0 or more")
    out = sys.stdout.buffer
    with client_for(args) as client:
        page = client.events(args.domain, tail=args.lines)
        out.writelines(page.lines)
        out.flush()
        if args.follow:
            for _, line in client.follow(args.domain, cursor=page.cursor):
                out.write(line)
                out.flush()
    return 0
