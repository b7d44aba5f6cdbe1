"""Untrusted text made safe for a terminal or a log line (SPEC §9).

Names, paths, URIs, descriptions and metadata come from users and from the store, which may
have been written by someone hostile.  Printed raw, a newline forges a log line of the root
daemon, and an escape sequence rewrites the victim's terminal.  :func:`escape` is the one place
that turns every character that is not printable (controls, line and paragraph separators,
bidi overrides, undecodable bytes kept as surrogates) into a visible escape; the CLI's text
output and :class:`SafeFormatter` (every daemon log line) go through it.

What is subtle: a traceback's own lines are legitimate, but the exception message inside it is
not, so a log record's exception text is escaped line by line and every line of it indented:
nothing an attacker puts in a message can start a line that looks like the daemon's.
"""

from __future__ import annotations

import logging

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """``text`` with every non-printable character shown as an escape (``\\n``, ``\\x1b``,
    ``\\u202e``; a byte kept by ``surrogateescape`` as ``\\xff``); printable text unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _one(c) for c in text)


def _one(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # an undecodable byte (surrogateescape)
        n -= 0xDC00
    return f"\\x{n:02x}" if n <= 0xFF else f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}"


class SafeFormatter(logging.Formatter):
    """A formatter whose every record is one line: the message escaped, an exception's text
    escaped line by line and indented."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:
        text = super().formatException(ei)  # type: ignore[arg-type]
        return "\n".join("    | " + escape(line) for line in text.splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("    | " + escape(line) for line in stack_info.splitlines())
