"""The ``audit`` command line: one typer app; each command lives in its own module of this package.

The exit code is a promise (docs/cli.md): 0 and 1 only for a verdict (``certify``, ``verify``, ``compare``),
130 for an interrupt, and 2 for everything else — usage errors from typer/click,
:class:`AuditInputError`, I/O errors (a full or read-only disk) and any unforeseen exception —
with one ``error: …`` line on stderr. An unforeseen exception's line names its type; its
traceback follows only with ``audit --debug`` or ``AUDIT_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextvars import ContextVar
from typing import TYPE_CHECKING, NoReturn, cast

import typer

from ..errors import AuditInputError, describe
from ..reports.escape import terminal_text
from . import certify, compare, design, report, reproduce, teacher, train, verify
from .invocation import recording_invocation

if TYPE_CHECKING:  # typer's vendored click, named for the type checker only
    from typer._click.exceptions import ClickException

# Recent typer releases vendor their own copy of click, so its exception classes are reached
# through typer's public ones rather than imported from the click package.
_CLICK_ERROR = cast(
    "type[ClickException]", next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
)

app = typer.Typer(
    name="audit",
    help="Certify trained VAEs against exact constant collapse of the encoder mean.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# Set by the --debug option of the root callback, for the run in progress.
_DEBUG: ContextVar[bool] = ContextVar("debug", default=False)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="On an unexpected error, print its traceback too (or set AUDIT_DEBUG=1)."
    ),
) -> None:
    """Certify trained VAEs against exact constant collapse of the encoder mean."""
    _DEBUG.set(debug)


def fail(message: str) -> NoReturn:
    """Print a one-line error (escaped for the terminal) and exit with code 2."""
    print(f"error: {terminal_text(message)}", file=sys.stderr)
    raise SystemExit(2)


def _unexpected(exc: BaseException) -> NoReturn:
    """Any other exception — an OSError of a full or read-only disk, or one nobody foresaw: its type
    and the first line of its message, then exit 2.

    Exit 1 means "not certified" (or "an input differs"): a crash must never read as a verdict.
    """
    if _DEBUG.get() or os.environ.get("AUDIT_DEBUG", "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
    fail(describe(exc))


def _interrupted() -> NoReturn:
    print("error: interrupted", file=sys.stderr)
    raise SystemExit(130)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    token = _DEBUG.set(False)
    try:
        with recording_invocation(["audit", *argv]):
            result = app(args=argv, prog_name="audit", standalone_mode=False)
    except AuditInputError as exc:
        fail(str(exc))
    except _CLICK_ERROR as exc:
        fail(exc.format_message().replace("\n", " "))
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except Exception as exc:  # OSError (a full or read-only disk, a permission) and anything unforeseen
        _unexpected(exc)
    finally:
        _DEBUG.reset(token)
    if result == 130:  # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns it
        _interrupted()
    raise SystemExit(result if isinstance(result, int) else 0)


for command in (certify, compare, design, report, reproduce, teacher, train, verify):
    command.register(app)
