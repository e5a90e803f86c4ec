"""Untrusted text (run names, settings, model answers, judge verdicts) made inert for each output.

HTML has its own escaping in the page; these are for the other places a name lands: a terminal
(control characters such as ANSI escapes), Markdown (links, raw HTML, table pipes, line breaks)
and CSV opened in a spreadsheet (a cell starting with ``=``, ``+``, ``-`` or ``@`` is a formula).
"""

from __future__ import annotations

import html
import unicodedata

_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
# Markdown characters that start links, images, emphasis, code or table cells; a backslash makes each literal
_MARKDOWN_SPECIAL = "\\`*_[]|"


def printable(text: object, keep_newlines: bool = False) -> str:
    """``text`` with every control or format character (ANSI escapes, newlines, bidi overrides) as ``\\xNN``/``\\uNNNN``.

    ``keep_newlines``: ``\\n`` stays a line break (a multi-line message); nothing else does."""
    out = []
    for char in str(text):
        if keep_newlines and char == "\n":
            out.append(char)
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def markdown_text(text: object) -> str:
    """``text`` as literal Markdown on one line: no live link, raw HTML, emphasis or extra table cell."""
    one_line = "".join(" " if char in "\r\n\u2028\u2029\x85" else char for char in str(text))
    escaped = html.escape(printable(one_line), quote=False)
    return "".join("\\" + char if char in _MARKDOWN_SPECIAL else char for char in escaped)


def csv_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: strings that would start a formula get a leading ``'``."""
    if isinstance(value, str) and value.startswith(_CSV_FORMULA_START):
        return "'" + value
    return value
