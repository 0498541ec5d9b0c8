"""Logging that a client cannot forge: the formatter every leitstand logger writes through, and
`clean` for values put into a log line."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from typing import Any, TextIO

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_UNSAFE = re.compile(r"[^\x21-\x7e]")  # anything but visible ASCII is escaped
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def clean(value: object, limit: int = 512) -> str:
    """Render `value` for a log line: visible ASCII only, so CR/LF, ANSI escapes or other
    control characters can neither split a line nor forge one."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isascii() and text.isprintable() and " " not in text:
        return text  # visible ASCII only (\x21-\x7e), the usual case: nothing to escape
    return _UNSAFE.sub(_escape, text)


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(_escape, text)


class SafeFormatter(logging.Formatter):
    """No value a client sent can split a log line or forge one, whichever logger writes it:
    control characters (CR, LF, ESC, ...) in messages are escaped, and traceback lines are
    indented, so that none of them can pass for a record of its own."""

    _second_and_stamp: tuple[int, str] = (-1, "")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if not record.message.isprintable():  # every character _CONTROL matches is not
            record.message = _escape_controls(record.message)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As logging's, with the seconds part computed once per second (strftime was ~1/8 of
        an access log line)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created, record.msecs)

    def stamp(self, created: float, msecs: float) -> str:
        """`asctime` for a record made at `created` (its `msecs` as LogRecord computes them)."""
        second, stamp = self._second_and_stamp  # one tuple: consistent across threads
        if int(created) != second:
            second = int(created)
            stamp = time.strftime(self.default_time_format, self.converter(created))
            self._second_and_stamp = (second, stamp)
        msec_format = self.default_msec_format
        return msec_format % (stamp, msecs) if msec_format else stamp

    def formatException(self, ei: Any) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("    " + _escape_controls(line) for line in text.split("\n"))


class LoopBatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes the INFO lines logged on a running event loop once per loop
    iteration, all in one `write`: under load that is one write for many access log lines
    instead of one each (a syscall per request, bench/notes.md). Nothing waits longer than the
    iteration it was logged in, so no line is held back while the server is idle; WARNING and
    above, and lines from other threads, are written at once, after what is pending (the order
    stays). `flush()` — which `logging.shutdown()` calls at exit — writes what is pending."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or record.levelno >= logging.WARNING:
            self._pending.append(line)
            self.flush()
            return
        self._batch(line, loop)

    def _batch(self, line: str, loop: asyncio.AbstractEventLoop) -> None:
        if self._scheduled_on is not loop:
            self.flush()  # what a loop that no longer runs may have left behind
            loop.call_soon(self.flush)
            self._scheduled_on = loop
        self._pending.append(line)

    def add_info_line(self, name: str, message: str, loop: asyncio.AbstractEventLoop) -> None:
        """What `emit` does with an INFO record of logger `name` whose message is `message`,
        logged on `loop` now: the same line (LINE_FORMAT, `message` visible ASCII already),
        without a LogRecord. Only for this handler with a SafeFormatter of LINE_FORMAT
        (`info_line_handler`)."""
        formatter = self.formatter
        assert isinstance(formatter, SafeFormatter)
        created = time.time()
        # LogRecord's msecs (Python 3.11); the stamp's seconds are cached (formatTime)
        msecs = int((created - int(created)) * 1000) + 0.0
        line = f"{formatter.stamp(created, msecs)} INFO {name} {message}{self.terminator}"
        with self.lock:  # type: ignore[union-attr]
            self._batch(line, loop)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled_on = None
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                try:
                    self.stream.write(text)
                except Exception:  # as StreamHandler: a broken stderr must not stop the server
                    self.handleError(logging.makeLogRecord({"msg": text[:200]}))
            super().flush()


def configure_logging(level: str) -> None:
    """Log to stderr at `level`, once per process (uvicorn's own loggers are left alone)."""
    logger = logging.getLogger("leitstand")
    logger.setLevel(level)
    if not logger.handlers:
        handler = LoopBatchingHandler(sys.stderr)
        handler.setFormatter(SafeFormatter(LINE_FORMAT))
        logger.addHandler(handler)
        logger.propagate = False


def info_line_handler(logger: logging.Logger) -> LoopBatchingHandler | None:
    """The handler an INFO line of `logger` may be handed to as text (`add_info_line`): when
    the only place the line would go is leitstand's own handler as `configure_logging` set it
    up (no filter on the way, nothing else listening). Anything else — a handler or filter
    added by a test or an embedding application, another format — gets None, and the caller
    logs an ordinary record."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.disabled or current.filters:
            return None
        if current.handlers:
            (handler, *others) = current.handlers
            if (others or current.propagate or type(handler) is not LoopBatchingHandler
                    or handler.filters or handler.level > logging.INFO
                    or type(handler.formatter) is not SafeFormatter
                    or handler.formatter._fmt != LINE_FORMAT):
                return None
            return handler
        current = current.parent if current.propagate else None
    return None
