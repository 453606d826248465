"""The ``audit`` command line: one typer app; each command lives in its own module of this package.

Every user mistake ends as ``error: <one line>`` on stderr and exit code 2 — usage errors from
typer/click and :class:`AuditInputError` alike — never a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn, cast

import typer

from ..errors import AuditInputError
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


@app.callback()
def _root() -> None:
    """Certify trained VAEs against exact constant collapse of the encoder mean."""


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _interrupted() -> NoReturn:
    print("error: interrupted", file=sys.stderr)
    raise SystemExit(130)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with recording_invocation(["audit", *argv]):
            result = app(args=argv, prog_name="audit", standalone_mode=False)
    except AuditInputError as exc:
        fail(str(exc).replace("\n", " "))
    except _CLICK_ERROR as exc:
        fail(exc.format_message().replace("\n", " "))
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    if result == 130:  # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns it
        _interrupted()
    raise SystemExit(result if isinstance(result, int) else 0)


for command in (certify, compare, design, report, reproduce, teacher, train, verify):
    command.register(app)
