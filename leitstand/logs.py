"""Logging that a client cannot forge: the formatter every leitstand logger writes through, and
`clean` for values put into a log line."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

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
    return _UNSAFE.sub(_escape, text)


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(_escape, text)


class SafeFormatter(logging.Formatter):
    """No value a client sent can split a log line or forge one, whichever logger writes it:
    control characters (CR, LF, ESC, ...) in messages are escaped, and traceback lines are
    indented, so that none of them can pass for a record of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("    " + _escape_controls(line) for line in text.split("\n"))


def configure_logging(level: str) -> None:
    """Log to stderr at `level`, once per process (uvicorn's own loggers are left alone)."""
    logger = logging.getLogger("leitstand")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
