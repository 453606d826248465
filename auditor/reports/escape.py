"""Strings from outside — paths, command lines, certificate fields — made safe for each output format.

Every report and every terminal line carries strings that came from a user's files or flags, and
each output format gives some characters a meaning: a newline in a path would start a Markdown
heading, a ``|`` would split a table row, a control character makes JUnit XML ill-formed, ``[/]``
is rich markup and an ESC sequence restyles the terminal. The certificate JSON stays the exact
record; the reports are for reading, so they show such characters as escapes.

One rule first, for every format: :func:`visible` turns each character a reader cannot see, or
that changes layout or direction, into a ``\\xNN`` / ``\\uNNNN`` escape: C0 and C1 controls
(newline, ESC, NUL), DEL, Unicode format characters (bidi overrides, zero-width), line and
paragraph separators, private-use and unassigned code points, and lone surrogates (the bytes of
a file name that is not valid UTF-8, under Python's ``surrogateescape``: they cannot be written
as UTF-8 at all). Backslashes are kept, so Windows paths stay readable. Then, one function per
format: :func:`terminal_text`, :func:`rich_text`, :func:`markdown_text`, :func:`markdown_code`,
:func:`xml_text` and :func:`html_text`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported only where a terminal is written to
    from rich.text import Text

_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_MARKDOWN_ACTIVE = frozenset("\\`*_~[]!<>&|$")


def _hidden(ch: str) -> bool:
    if ch == "\u00ad":  # the soft hyphen (category Cf) is harmless and common in names
        return False
    return unicodedata.category(ch) in _INVISIBLE_CATEGORIES or ord(ch) in (0xFFFE, 0xFFFF)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: object) -> str:
    """``text`` with every invisible, layout-changing or unencodable character written as an escape."""
    return "".join(_escape_char(ch) if _hidden(ch) else ch for ch in str(text))


def terminal_text(text: object) -> str:
    """One line for a plain ``print``: no newline, no ESC sequence, nothing the encoder can refuse."""
    return visible(text)


def rich_text(text: object, style: str = "") -> Text:
    """A rich ``Text`` that prints exactly ``visible(text)``.

    A ``Text`` is never parsed for markup or emoji codes, so ``[bold]``, ``[/]`` or
    ``[link=…]`` in a path print as they are. ``rich.markup.escape`` is not enough: it leaves
    ``\\[`` before a non-tag alone, which rich then prints as ``[``.
    """
    from rich.text import Text

    return Text(visible(text), style=style)


def markdown_text(text: object) -> str:
    """Inline Markdown — after other text on a line, or a GFM table cell — that renders as exactly
    ``visible(text)``.

    :func:`visible` leaves no newline, so no block (heading, list, quote, table row) can start.
    What is left is every character that opens an inline construct of CommonMark, GFM or
    GitHub: the backslash (escapes), the backtick (code spans), ``*`` and ``_`` (emphasis), ``~``
    (strikethrough), ``[ ] !`` (links, images), ``< >`` (autolinks, HTML), ``&`` (entities),
    ``|`` (table cells) and ``$`` (GitHub's maths). Each gets a backslash (an ``_`` inside a word
    needs none), which CommonMark
    allows before any ASCII punctuation (in a GFM cell ``\\|`` is how a pipe is written).
    Leading and trailing whitespace, which renderers trim, is kept as numeric character references.
    """
    shown = visible(text)
    body = "".join("\\" + ch if _markdown_active(shown, i) else ch for i, ch in enumerate(shown))
    core = body.strip()
    lead = body[: len(body) - len(body.lstrip())]
    trail = body[len(lead) + len(core) :]
    return "".join(f"&#{ord(ch)};" for ch in lead) + core + "".join(f"&#{ord(ch)};" for ch in trail)


def _markdown_active(text: str, i: int) -> bool:
    """Whether ``text[i]`` could open an inline construct. An ``_`` between two letters or digits
    cannot (CommonMark: it is both left- and right-flanking there, and not next to punctuation),
    so ``I_T`` stays as it is written."""
    ch = text[i]
    if ch == "_" and 0 < i < len(text) - 1:
        return not (text[i - 1].isalnum() and text[i + 1].isalnum())
    return ch in _MARKDOWN_ACTIVE


def markdown_code(text: object, in_table: bool = False) -> str:
    """An inline code span that shows exactly ``visible(text)``.

    The fence is one backtick longer than the longest run of backticks inside, and a space pads
    both ends when the text starts or ends with a backtick or a space (CommonMark strips one
    such space from each end). In a GFM table cell each ``|`` becomes ``\\|``: GFM splits cells
    on pipes even inside code spans, and removes the backslash before the span is parsed.
    """
    body = visible(text)
    if body == "":
        return ""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    if body.strip(" ") and (body[0] in "` " or body[-1] in "` "):
        body = f" {body} "
    if in_table:
        body = body.replace("|", "\\|")
    return f"{fence}{body}{fence}"


def xml_text(text: object) -> str:
    """Text or an attribute value for XML 1.0: only characters its ``Char`` production allows.

    ElementTree escapes ``& < > "`` but writes control characters as they are, and a document
    holding one is not well-formed, even escaped as a character reference.
    """
    return visible(text)


def html_text(text: object) -> str:
    """Text or a quoted attribute value for HTML: escaped, and encodable as UTF-8."""
    return html.escape(visible(text), quote=True)
