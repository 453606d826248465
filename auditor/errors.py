"""The one exception type that the command line turns into a one-line message and exit code 2."""

import reprlib


class AuditInputError(Exception):
    """Bad input or usage: a file, flag or shape the user can fix.

    The message must be one line and say what to fix; the CLI prints it as
    ``error: <message>`` and exits with code 2, without a traceback.
    """


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # (keyword arguments only from Python 3.12)
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 2, 40, 40, 40
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 4
    return short


_SHORT_REPR = _short_repr()


def shown(value: object) -> str:
    """A value read from a file, for an error message: a short, one-line, ASCII-only repr.

    Hostile files hold megabyte strings, lists nested a million deep, integers of thousands of
    digits and terminal escapes; a plain ``repr`` of those is huge, recursive, an exception of
    its own, or a command to the user's terminal.
    """
    try:
        text = _SHORT_REPR.repr(value)
    except ValueError:  # an integer longer than Python prints (4300 digits)
        text = f"<a {type(value).__name__} too long to print>"
    return shown_text(text)


def shown_text(text: str, limit: int = 200) -> str:
    """A string from a file (a name, a path) for an error message: at most ``limit`` characters,
    every one outside printable ASCII escaped (``\\xNN``, ``\\uNNNN``), no quotes added."""
    clipped = text if len(text) <= limit else text[: limit - 3] + "..."
    return "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in clipped)


def describe(exc: BaseException) -> str:
    """``Type: the message's first line`` (at most 160 characters), to quote an exception in one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


def printable(text: object) -> str:
    """``text`` as it may appear in a message: as is when printable, else Python's ascii() of it,
    so that a name taken from a file (a folder entry, a column) cannot move the terminal's cursor."""
    text = str(text)
    return text if text.isprintable() else ascii(text)
