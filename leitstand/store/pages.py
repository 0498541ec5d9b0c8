"""Pages of lines across a domain's files: every retained segment in `seq` order, then the
active file (see `view.py`, `cursors.py`). Each line is handed out once, in order, with the
cursor just after it; a page may span files."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import BadCursor, Gone
from .base import Batch
from .cursors import Cursor, decode_cursor, encode_cursor
from .files import partial_tail_start
from .sources import read_lines, start_of_last_lines
from .streams import StreamCache
from .view import DomainView, SegmentGone

MAX_BATCH_BYTES = 4 * 1024 * 1024  # a page stops early once it holds this many bytes


def read_batch(
    dir_fd: int, domain: str, *, cursor: str | None, limit: int, tail: int | None,
    settle: Callable[[int], int], max_bytes: int = MAX_BATCH_BYTES,
    cache: StreamCache | None = None,
) -> Batch:
    """Whole lines of `domain` after `cursor` (or the last `tail` lines), at most `limit`."""
    position = decode_cursor(cursor) if cursor is not None else None
    for _ in range(3):
        view = DomainView(dir_fd, domain, settle, cache)
        try:
            if tail is not None:
                seq, offset = _tail_start(view, tail)
                limit = tail
            else:
                seq, offset = _start(view, position)
            return _read(view, seq, offset, limit, max_bytes)
        except SegmentGone:
            continue  # deleted while we read it: look again (a cursor into it is then 410)
        finally:
            view.close()
    raise Gone("the domain's oldest segments are being deleted; try again")


def _cursor(view: DomainView, seq: int, offset: int) -> str:
    return encode_cursor(seq, view.active_ino if seq == view.active_seq else 0, offset)


def _start(view: DomainView, position: Cursor | None) -> tuple[int, int]:
    if position is None:
        return view.first_seq, 0
    seq = view.active_seq if position.seq is None else position.seq
    if seq > view.active_seq:
        raise BadCursor("cursor points past the domain's active file")
    if seq == view.active_seq:
        if position.inode != view.active_ino or position.offset > view.active_size:
            return seq, 0  # the file was replaced or cut by hand: start at its beginning
        return seq, position.offset
    if view.segment(seq) is None:
        oldest = view.next_seq(seq)
        assert oldest is not None
        raise Gone(
            "the cursor points into a segment that retention has deleted; continue with "
            "next_cursor at the oldest retained line",
            headers={"X-Next-Cursor": _cursor(view, oldest, 0)},
            extra={"next_cursor": _cursor(view, oldest, 0)},
        )
    return seq, position.offset


def _read(view: DomainView, seq: int, offset: int, limit: int, max_bytes: int) -> Batch:
    lines: list[bytes] = []
    cursors: list[str] = []
    first = True
    while True:
        source = view.open(seq)
        try:
            if first and not source.after_newline(offset):
                raise BadCursor("cursor does not point at the end of a line")
            got, ends, at_end = read_lines(source, offset, limit - len(lines),
                                           max_bytes - sum(map(len, lines)))
        finally:
            source.close()
        first = False
        lines += got
        cursors += [_cursor(view, seq, end) for end in ends]
        if ends:
            offset = ends[-1]
        following = view.next_seq(seq)
        if not at_end or following is None:
            break
        seq, offset = following, 0
    return Batch(lines, cursors, _cursor(view, seq, offset))


def _tail_start(view: DomainView, count: int) -> tuple[int, int]:
    """Where the last `count` lines begin, going back through the segments if needed."""
    seq: int | None = view.active_seq
    end = partial_tail_start(view.active_fd, view.active_size) if view.active_fd is not None else 0
    start = (view.active_seq, end)  # no lines: from now on
    while seq is not None and count > 0:
        source = view.open(seq)
        try:
            offset, found = start_of_last_lines(source, count)
        finally:
            source.close()
        start = (seq, offset)
        count -= found
        seq = _previous_seq(view, seq)
    return start


def _previous_seq(view: DomainView, seq: int) -> int | None:
    earlier = [s.seq for s in view.segments if s.seq < seq]
    return earlier[-1] if earlier else None


def start_cursor_since(dir_fd: int, domain: str, since: float,
                       settle: Callable[[int], int]) -> str:
    """A cursor to the start of the first file that holds a line written at or after `since`
    (Unix time): the oldest segment last written to then or later, else the active file."""
    view = DomainView(dir_fd, domain, settle)
    try:
        for segment in view.segments:
            written = view.written_at(segment.seq)
            if written is not None and written >= since:
                return _cursor(view, segment.seq, 0)
        return _cursor(view, view.active_seq, 0)
    finally:
        view.close()
