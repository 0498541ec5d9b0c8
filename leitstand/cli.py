"""The `leitstand` command: `send` events, `serve` the service, `tail` a domain, run the `sink`.

Exit status 0 on success; otherwise 1 (sending or reading failed), 2 (bad usage or settings) or
130 (interrupted), with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from . import __version__
from .client import (
    Batch,
    Client,
    ClientConfig,
    ConfigurationError,
    IngestError,
    Receipt,
    SendSummary,
)
from .client.config import DEFAULT_MAX_BODY, DEFAULT_MAX_EVENTS

# Show a progress bar (on a terminal) from this many events on.
PROGRESS_FROM = 10_000
KEY_PREFIX = "leitstand-send"


class UsageError(Exception):
    """Bad arguments or input: exit status 2."""


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
        return fail(describe_failure(exc, args), status=1)
    except KeyboardInterrupt:
        resumable = getattr(args, "file", None) is not None and not args.fresh
        return fail("interrupted" + (" (re-run the same command to send the rest; nothing is "
                                     "stored twice)" if resumable else ""), status=130)
    except BrokenPipeError:
        return 0  # `leitstand tail ... | head`: the reader is done


def fail(reason: str, *, status: int) -> int:
    print(f"leitstand: {' '.join(reason.split())}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leitstand", description="Send events to leitstand, run it, or follow a domain."
    )
    parser.add_argument("--version", action="version", version=f"leitstand {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    send = commands.add_parser(
        "send", help="send one event (JSON argument) or NDJSON (stdin or --file)",
        description="Send one event given as JSON, or NDJSON lines from --file or stdin in "
        "batches. With --file, a re-run after an interruption stores nothing twice.",
    )
    send.add_argument("domain")
    send.add_argument("json", nargs="?", help="one event (a JSON object) or an array of them")
    send.add_argument("-f", "--file", type=Path, help="NDJSON file, one event per line")
    send.add_argument("--batch-bytes", type=int, default=None,
                      help=f"largest request body (default LEITSTAND_MAX_BODY or "
                      f"{DEFAULT_MAX_BODY}); must not exceed the server's limit")
    send.add_argument("--batch-events", type=int, default=None,
                      help=f"most events per request (default LEITSTAND_MAX_EVENTS or "
                      f"{DEFAULT_MAX_EVENTS})")
    send.add_argument("--fresh", action="store_true",
                      help="with --file: new Idempotency-Keys, i.e. store the file again even "
                      "if it was sent before")
    progress = send.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show a progress bar on stderr")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    add_connection_options(send)
    send.set_defaults(run=run_send)

    serve = commands.add_parser("serve", help="run the service (uvicorn)",
                                description="Run the service with uvicorn, hardened as the "
                                "README recommends (request-head deadline, no proxy headers "
                                "from uvicorn, keep-alive 5 s, a concurrency limit); settings "
                                "come from the environment and .env as for `uvicorn app:app`.")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8788)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    serve.add_argument("--limit-concurrency", type=int, default=1000,
                       help="connections and requests at once; beyond, uvicorn answers 503")
    serve.add_argument("--access-log", action="store_true",
                       help="also uvicorn's access log (leitstand logs every request itself)")
    serve.set_defaults(run=run_serve)

    sink = commands.add_parser("sink", help="write the NATS JetStream stream into JSONL files",
                               description="Run the sink of the nats backend: a durable "
                               "JetStream consumer that writes every event into "
                               "LEITSTAND_DATA_DIR exactly once (see README, Betrieb im Cluster).")
    sink.set_defaults(run=run_sink)

    tail = commands.add_parser("tail", help="print a domain's last events; -f to follow",
                               description="Print the last stored lines of DOMAIN (read API).")
    tail.add_argument("domain")
    tail.add_argument("-n", "--lines", type=int, default=10, help="how many (default 10)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new events as they are stored")
    add_connection_options(tail)
    tail.set_defaults(run=run_tail)
    return parser


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


# -- send ---------------------------------------------------------------------------------------
def run_send(args: argparse.Namespace) -> int:
    if args.json is not None and args.file is not None:
        raise UsageError("give either a JSON argument or --file, not both")
    if args.fresh and args.file is None:
        raise UsageError("--fresh only applies to --file")
    with client_for(args, max_body=args.batch_bytes, max_events=args.batch_events) as client:
        if args.json is not None:
            return send_argument(client, args.domain, args.json)
        if args.file is not None:
            return send_file(client, args)
        if sys.stdin.isatty():
            raise UsageError("no events: give a JSON argument, --file, or pipe NDJSON to stdin")
        return send_stream(client, args, sys.stdin.buffer, total=None, key_for=None)


def send_argument(client: Client, domain: str, text: str) -> int:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise UsageError(f"the JSON argument is not valid JSON: {exc}") from None
    if isinstance(value, dict):
        receipt = client.send(domain, value)
        print(f"stored 1 event in {receipt.domain or domain}"
              + (" (already stored before)" if receipt.replayed else ""))
        return 0
    if isinstance(value, list) and value:
        summary = client.send_many(domain, value)
        print(summary_line(summary, domain, None))
        return 0
    raise UsageError("the JSON argument must be an object or a non-empty array of objects")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def send_file(client: Client, args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        digest, total = scan(path)
        handle = path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    key_for = None if args.fresh else file_keys(digest)
    with handle:
        return send_stream(client, args, handle, total=total, key_for=key_for)


def scan(path: Path) -> tuple[str, int]:
    """The file's sha256 and its number of non-blank lines (one read)."""
    digest = hashlib.sha256()
    events = 0
    with path.open("rb") as handle:
        for line in handle:
            digest.update(line)
            if line.strip():
                events += 1
    return digest.hexdigest(), events


def file_keys(digest: str) -> Callable[[Batch], str]:
    """Idempotency-Keys for a file's batches: its content hash and the batch's byte offset.
    The same file split with the same limits gives the same batches, hence the same keys."""

    def key_for(batch: Batch) -> str:
        return f"{KEY_PREFIX}:{digest}:{batch.offset}"

    return key_for


def send_stream(
    client: Client,
    args: argparse.Namespace,
    source: IO[bytes],
    *,
    total: int | None,
    key_for: Callable[[Batch], str] | None,
) -> int:
    started = time.monotonic()
    show, delay = args.progress, 0.0
    if show is None:  # a terminal and a large input; of unknown size: once it takes a while
        show = sys.stderr.isatty() and (total is None or total >= PROGRESS_FROM)
        delay = 1.0 if total is None else 0.0
    bar = make_progress(total, enabled=show, delay=delay)

    def on_batch(batch: Batch, receipt: Receipt) -> None:
        bar.update(batch.events)

    try:
        summary = client.send_lines(args.domain, source, key_for=key_for, on_batch=on_batch)
    finally:
        bar.close()
    if summary.events == 0:
        raise UsageError("no events in the input (only blank lines)")
    print(summary_line(summary, args.domain, time.monotonic() - started))
    return 0


def make_progress(total: int | None, *, enabled: bool, delay: float) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit=" events", unit_scale=True, file=sys.stderr,
                disable=not enabled, dynamic_ncols=True, delay=delay)


def summary_line(summary: SendSummary, domain: str, seconds: float | None) -> str:
    text = (f"stored {summary.events} events in {domain} "
            f"({summary.batches} batch{'es' if summary.batches != 1 else ''}")
    if summary.replayed_batches:
        text += (f", {summary.replayed_batches} of them ({summary.replayed_events} events) "
                 "already stored by an earlier run")
    text += ")"
    if seconds is not None:
        text += f" in {seconds:.1f} s"
    return text


def describe_failure(exc: IngestError, args: argparse.Namespace) -> str:
    text = str(exc)
    if exc.batch is not None and getattr(args, "file", None) is not None:
        text += (f" (in the batch of lines {exc.batch.first_line}-{exc.batch.last_line} "
                 f"of {args.file})")
    if getattr(args, "command", None) == "send" and exc.accepted:
        hint = ("re-run the same command to send the rest; nothing is stored twice"
                if getattr(args, "file", None) is not None and not args.fresh
                else "a re-run sends them again")
        text += f" ({exc.accepted} events of earlier batches were stored; {hint})"
    return text


# -- serve --------------------------------------------------------------------------------------
def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .config import load_settings

    settings = load_settings()  # a missing token or bad setting: a readable message, exit 2
    uvicorn.run(
        "leitstand.cli:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers if args.workers > 1 else None,
        reload=args.reload,
        access_log=args.access_log,
        log_level=settings.log_level.lower(),
        # the README's settings for an open network (see "Härtung und Sicherheit")
        http="leitstand.headertimeout:HeaderTimeoutProtocol",
        proxy_headers=False,  # only LEITSTAND_TRUSTED_PROXIES decides about X-Forwarded-For
        timeout_keep_alive=5,
        limit_concurrency=args.limit_concurrency,
    )
    return 0


def app_from_environment() -> Any:
    """The app as `uvicorn app:app` builds it (for `leitstand serve`, in every worker)."""
    from .app import create_app
    from .config import load_settings

    return create_app(load_settings())


def run_sink(args: argparse.Namespace) -> int:
    from .sink import main as sink_main

    sink_main()
    return 0


# -- tail ---------------------------------------------------------------------------------------
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


if __name__ == "__main__":
    sys.exit(main())
