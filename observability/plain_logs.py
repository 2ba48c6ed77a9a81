"""
Plain-text logs a client cannot forge: one record starts one line, whatever its text holds.

A client's text reaches log messages (a model name, a tool name, a path, an exception's
message). Written raw, a newline in it would start a line of the client's choosing (a fake
`... INFO llmapi.requests [abc] POST openai-chat 200`). `EscapeControlCharactersFilter`, on
every plain-format handler (Django's and uvicorn's), rewrites control characters in the
message and its arguments as escapes (`\\n`, `\\r`, `\\x1b`, `\\u2028`), and indents every
line of a traceback, so the only line that starts at column 0 is the record's own. The JSON
format needs none of this: its encoder escapes them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators that some log
# viewers break lines on.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
TRACEBACK_INDENT = "  "


def _escape_one(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED.get(char)
    if named:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control_characters(text: str) -> str:
    """`text` on one line: control characters written as backslash escapes."""
    return _CONTROL.sub(_escape_one, text)


def _escaped_argument(value: Any) -> Any:
    if isinstance(value, str):
        return escape_control_characters(value)
    if value is None or isinstance(value, int | float | bytes):
        return value
    # Any other object (an exception, a path) is written with str() or repr(): escape what
    # that gives only when it would break the line, and otherwise leave the object as it is.
    text = str(value)
    if _CONTROL.search(text) or _CONTROL.search(repr(value)):
        return escape_control_characters(text)
    return value


def indent_traceback(text: str) -> str:
    """A traceback with every line indented, so none of them can pass for a record."""
    return "\n".join(
        TRACEBACK_INDENT + _CONTROL.sub(_escape_one, line) for line in text.splitlines()
    )


class EscapeControlCharactersFilter(logging.Filter):
    """Escapes client text in each record for a plain-text handler (see the module docstring)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape_control_characters(record.msg)
        elif record.msg is not None and not record.args:
            record.msg = _escaped_argument(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_escaped_argument(value) for value in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _escaped_argument(value) for key, value in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = indent_traceback(self._formatter.formatException(record.exc_info))
        elif record.exc_text and not record.exc_text.startswith(TRACEBACK_INDENT):
            record.exc_text = indent_traceback(record.exc_text)
        if record.stack_info and not record.stack_info.startswith(TRACEBACK_INDENT):
            record.stack_info = indent_traceback(record.stack_info)
        return True
