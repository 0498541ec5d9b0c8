"""`leitstand spool status` and `leitstand spool flush`: the client-side spool (issue 16)."""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
from typing import Any

from ..client import Spool
from ..client.config import DEFAULT_SPOOL_MAX_BYTES
from .common import UsageError, add_connection_options, client_for, fail


def register(commands: Any) -> None:
    spool = commands.add_parser(
        "spool", help="show or send what the client spooled (LEITSTAND_SPOOL_DIR)",
        description="The client's durable spool: batches that could not be delivered, kept "
        "on disk with their Idempotency-Keys until they are sent.")
    actions = spool.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="entries, bytes, oldest entry, last error")
    add_spool_option(status)
    status.set_defaults(run=run_status)
    flush = actions.add_parser("flush", help="send everything spooled now, oldest first",
                               description="Send the spooled batches in order, each under its "
                               "own Idempotency-Key (a batch the server already has is not "
                               "stored again). Exit 0 when the spool is empty afterwards.")
    add_spool_option(flush)
    add_connection_options(flush)
    flush.set_defaults(run=run_flush)


def add_spool_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spool", metavar="DIR", help="the spool directory "
                        "(default LEITSTAND_SPOOL_DIR)")


def spool_dir(args: argparse.Namespace) -> str:
    path = args.spool or os.environ.get("LEITSTAND_SPOOL_DIR", "")
    if not path:
        raise UsageError("no spool: give --spool DIR or set LEITSTAND_SPOOL_DIR")
    return str(path)


def run_status(args: argparse.Namespace) -> int:
    path = spool_dir(args)
    if not os.path.isdir(path):
        raise UsageError(f"{path} is not a directory (nothing was ever spooled there)")
    status = Spool(path, DEFAULT_SPOOL_MAX_BYTES).status()
    print(f"spool:    {path}")
    print(f"entries:  {status.entries}")
    print(f"bytes:    {status.bytes}")
    if status.oldest is not None:
        age = (datetime.now(timezone.utc) - status.oldest).total_seconds()
        print(f"oldest:   {status.oldest.isoformat(timespec='seconds')} ({age:.0f} s ago)")
    if status.rejected:
        print(f"rejected: {status.rejected} (refused by the server; kept in {path}/rejected)")
    error = status.last_error
    if error is not None:
        print(f"last error: {error.get('time')}: {error.get('error')}")
    return 0


def run_flush(args: argparse.Namespace) -> int:
    with client_for(args, spool_dir=spool_dir(args)) as client:
        drain = client.flush_spool()
    print(f"sent {drain.events} events in {drain.batches} "
          f"batch{'es' if drain.batches != 1 else ''} from the spool"
          + (f"; {drain.rejected} refused by the server (moved to rejected/)"
             if drain.rejected else ""))
    if drain.error is not None:
        return fail(f"stopped, the rest stays spooled: {drain.error}", status=1)
    return 0
