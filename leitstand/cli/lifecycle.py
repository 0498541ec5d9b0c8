"""`leitstand rotate` and `leitstand export`: a domain's files on this machine, next to a running
service or without one (both follow the data file's flock protocol)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..domains import file_stem, normalize_domain
from ..errors import LeitstandError
from ..metrics import Metrics
from ..store.datafile import open_helper_dir
from ..store.domainfile import DomainFile, StoreOptions
from ..store.pages import read_batch, start_cursor_since
from ..store.reader import settled_size
from ..store.rotation import Rotation, RotationPolicy
from ..units import parse_age
from .common import UsageError, fail

_PAGE = 1000


def register(commands: Any) -> None:
    rotate = commands.add_parser(
        "rotate", help="close a domain's active file now (a new segment)",
        description="Close DOMAIN's active file as the next segment in "
        "<data-dir>/archive/<stem>/, under the file's flock (safe while the service runs).")
    _add_common(rotate)
    rotate.add_argument("--lock-timeout", type=float, default=30.0,
                        help="seconds to wait for the file's lock (default 30)")
    rotate.set_defaults(run=run_rotate)

    export = commands.add_parser(
        "export", help="write every retained line of a domain to stdout",
        description="Write every retained line of DOMAIN to stdout: all segments (decompressed) "
        "in order, then the active file. A progress bar goes to stderr.")
    _add_common(export)
    export.add_argument("--since", help="start with the first file holding a line written at or "
                        "after TIME: an ISO 8601 time (2026-12-01T00:00:00Z) or an age (7d, 12h)")
    export.set_defaults(run=run_export)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data-dir", type=Path,
                        help="the data directory (default LEITSTAND_DATA_DIR or ./data)")


def _open_dir(args: argparse.Namespace) -> tuple[str, int]:
    domain = normalize_domain(args.domain)
    data_dir = args.data_dir or Path(os.environ.get("LEITSTAND_DATA_DIR", "data"))
    try:
        return domain, os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot open the data directory {str(data_dir)!r}: "
                         f"{exc.strerror or exc}") from exc


def run_rotate(args: argparse.Namespace) -> int:
    domain, dir_fd = _open_dir(args)
    helper_fd = open_helper_dir(dir_fd)
    options = StoreOptions(lock_timeout=args.lock_timeout,
                           fsync=os.environ.get("LEITSTAND_FSYNC", "always") != "off")
    file = DomainFile(file_stem(domain), dir_fd, helper_fd, Metrics(), options, label=domain)
    try:
        try:
            os.stat(file.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return fail(f"domain {domain!r} has no active file", status=1)
        file.open(create=False)
        file.lock()
        file.recover()
        segment = Rotation(file, RotationPolicy(), Metrics()).rotate()
    except LeitstandError as exc:
        return fail(exc.detail, status=1)
    finally:
        file.close_all()
        os.close(helper_fd)
        os.close(dir_fd)
    if segment is None:
        print(f"{domain}: the active file is empty; nothing to rotate", file=sys.stderr)
    else:
        print(f"archive/{file.stem}/{segment.name}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    since = _since(args.since) if args.since else None
    domain, dir_fd = _open_dir(args)
    out = sys.stdout.buffer
    try:
        cursor = start_cursor_since(dir_fd, domain, since, settled_size) if since else None
        with tqdm(unit=" lines", file=sys.stderr, desc=domain, disable=None) as progress:
            while True:
                page = read_batch(dir_fd, domain, cursor=cursor, limit=_PAGE, tail=None,
                                  settle=settled_size)
                if not page.lines:
                    break
                out.writelines(page.lines)
                progress.update(len(page.lines))
                cursor = page.next_cursor
        out.flush()
    except LeitstandError as exc:
        return fail(exc.detail, status=1)
    finally:
        os.close(dir_fd)
    return 0


def _since(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return time.time() - parse_age(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is neither an ISO 8601 time nor an age such as "
                         "7d") from None
