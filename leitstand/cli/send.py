"""`leitstand send`: one event, or NDJSON from a file or stdin in batches."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..client import Batch, Client, IngestError, Receipt, SendSummary
from ..client.config import DEFAULT_MAX_BODY, DEFAULT_MAX_EVENTS
from .common import UsageError, add_connection_options, client_for

# Show a progress bar (on a terminal) from this many events on.
PROGRESS_FROM = 10_000
KEY_PREFIX = "leitstand-send"


def register(commands: Any) -> None:
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
    send.add_argument("--spool", metavar="DIR",
                      help="keep what cannot be delivered now in DIR and send it later "
                      "(default LEITSTAND_SPOOL_DIR; see `leitstand spool`)")
    progress = send.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show a progress bar on stderr")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    add_connection_options(send)
    send.set_defaults(run=run_send)


def run_send(args: argparse.Namespace) -> int:
    if args.json is not None and args.file is not None:
        raise UsageError("give either a JSON argument or --file, not both")
    if args.fresh and args.file is None:
        raise UsageError("--fresh only applies to --file")
    with client_for(args, max_body=args.batch_bytes, max_events=args.batch_events,
                    spool_dir=args.spool) as client:
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
        if receipt.spooled:
            print(f"spooled 1 event for {domain} in {client.config.spool_dir} (not stored yet; "
                  "sent later, or now with `leitstand spool flush`)")
        else:
            print(f"stored 1 event in {receipt.domain or domain}"
                  + (" (already stored before)" if receipt.replayed else ""))
        return 0
    if isinstance(value, list) and value:
        summary = client.send_many(domain, value)
        print(summary_line(summary, domain, None, client.config.spool_dir))
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
    if summary.events + summary.spooled_events == 0:
        raise UsageError("no events in the input (only blank lines)")
    print(summary_line(summary, args.domain, time.monotonic() - started,
                       client.config.spool_dir))
    return 0


def make_progress(total: int | None, *, enabled: bool, delay: float) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit=" events", unit_scale=True, file=sys.stderr,
                disable=not enabled, dynamic_ncols=True, delay=delay)


def summary_line(summary: SendSummary, domain: str, seconds: float | None,
                 spool: str = "") -> str:
    text = (f"stored {summary.events} events in {domain} "
            f"({summary.batches} batch{'es' if summary.batches != 1 else ''}")
    if summary.replayed_batches:
        text += (f", {summary.replayed_batches} of them ({summary.replayed_events} events) "
                 "already stored by an earlier run")
    text += ")"
    if seconds is not None:
        text += f" in {seconds:.1f} s"
    if summary.spooled_events:
        text += (f"; spooled {summary.spooled_events} events in {spool} (not stored yet; sent "
                 "later, or now with `leitstand spool flush`)")
    return text


def describe_failure(exc: IngestError, args: argparse.Namespace) -> str:
    text = str(exc)
    # NDJSON from a file or stdin (not the JSON argument): name the input line
    from_lines = getattr(args, "command", None) == "send" and args.json is None
    first_invalid = invalid_line(exc, getattr(args, "file", None)) if from_lines else None
    if first_invalid is not None:
        text += f" (the first invalid event is line {first_invalid})"
    elif exc.batch is not None and getattr(args, "file", None) is not None:
        text += (f" (in the batch of lines {exc.batch.first_line}-{exc.batch.last_line} "
                 f"of {args.file})")
    if getattr(args, "command", None) == "send" and exc.accepted:
        hint = ("re-run the same command to send the rest; nothing is stored twice"
                if getattr(args, "file", None) is not None and not args.fresh
                else "a re-run sends them again")
        text += f" ({exc.accepted} events of earlier batches were stored; {hint})"
    return text


def invalid_line(exc: IngestError, file: Path | None) -> int | None:
    """The input line (1-based) of the first event the server's schema check refused: its
    `index` counts the batch's events, and blank lines in between are skipped, so a batch with
    blanks is re-read from its offset in `file`. None if not known."""
    batch = exc.batch
    if not exc.errors or batch is None or not isinstance(exc.errors[0].get("index"), int):
        return None
    index = exc.errors[0]["index"]
    if batch.last_line - batch.first_line + 1 == batch.events:  # no blank line inside
        return int(batch.first_line + index)
    if file is None:
        return None
    try:
        with file.open("rb") as handle:
            handle.seek(batch.offset)
            for number, raw in enumerate(handle, start=batch.first_line):
                if raw.strip():
                    if index == 0:
                        return number
                    index -= 1
    except OSError:
        return None
    return None
