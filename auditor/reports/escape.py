"""Strings that came from a file (paths, roles, subject names), made safe for one output each.

A certificate is a file anyone can edit: a path in it may hold a newline, a terminal escape
sequence, or Markdown that would draw a table row, a link or a heading of its own.
"""

from __future__ import annotations

import re
import unicodedata

_MARKDOWN_INLINE = re.compile(r"([\\`*_{}\[\]<>()#+!|~&])")


def terminal_text(text: str) -> str:
    """``text`` with every control or format character (newlines, ESC, bidi overrides, lone
    surrogates of undecodable file names) written as its Python escape, so that it prints as
    one inert line."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c).startswith("C") else c for c in text)


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown inline text (a table cell keeps its place in its row): control
    characters as for the terminal, and every character with an inline meaning backslash-escaped."""
    return _MARKDOWN_INLINE.sub(r"\\\1", terminal_text(text))
