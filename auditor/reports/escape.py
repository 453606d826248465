"""Strings that came from a file (paths, roles), made safe for one output each.

A certificate is a file anyone can edit: a path in it may hold a newline or a terminal escape
sequence.
"""

from __future__ import annotations

import unicodedata


def terminal_text(text: str) -> str:
    """``text`` with every control or format character (newlines, ESC, bidi overrides, lone
    surrogates of undecodable file names) written as its Python escape, so that it prints as
    one inert line."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c).startswith("C") else c for c in text)
