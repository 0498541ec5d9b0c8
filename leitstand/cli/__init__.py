"""The `leitstand` command: `send` events, `serve` the service, `tail` a domain, run the `sink`.

Each command group lives in its own module with a `register(commands)` that adds its parser.
Exit status 0 on success; otherwise 1 (sending or reading failed), 2 (bad usage or settings) or
130 (interrupted), with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..client import ConfigurationError, IngestError
from . import lifecycle, schema, send, serve, spool, tail, token
from .common import UsageError, fail

COMMAND_MODULES = (send, serve, tail, schema, spool, token, lifecycle)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except UsageError as exc:
        return fail(str(exc), status=2)
    except ConfigurationError as exc:
        return fail(str(exc.detail), status=2)
    except IngestError as exc:
        return fail(send.describe_failure(exc, args), status=1)
    except KeyboardInterrupt:
        resumable = getattr(args, "file", None) is not None and not args.fresh
        return fail("interrupted" + (" (re-run the same command to send the rest; nothing is "
                                     "stored twice)" if resumable else ""), status=130)
    except BrokenPipeError:
        return 0  # `leitstand tail ... | head`: the reader is done


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leitstand", description="Send events to leitstand, run it, or follow a domain."
    )
    parser.add_argument("--version", action="version", version=f"leitstand {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
