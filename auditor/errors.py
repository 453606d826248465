"""The one exception type that the command line turns into a one-line message and exit code 2."""


class AuditInputError(Exception):
    """Bad input or usage: a file, flag or shape the user can fix.

    The message must be one line and say what to fix; the CLI prints it as
    ``error: <message>`` and exits with code 2, without a traceback.
    """


def describe(exc: BaseException) -> str:
    """``Type: the message's first line`` (at most 160 characters), to quote an exception in one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


def printable(text: object) -> str:
    """``text`` as it may appear in a message: as is when printable, else Python's ascii() of it,
    so that a name taken from a file (a folder entry, a column) cannot move the terminal's cursor."""
    text = str(text)
    return text if text.isprintable() else ascii(text)
