"""The ``audit`` command line: one typer app; each command lives in its own ``cmd_*`` module.

Every user mistake ends as ``error: <one line>`` on stderr and exit code 2 — usage errors from
typer/click and :class:`AuditInputError` alike — never a traceback.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar

import typer

from ..errors import AuditInputError

# Recent typer releases vendor their own copy of click, so its exception classes are reached
# through typer's public ones rather than imported from the click package.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

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


def _register_commands() -> None:
    """Each command module adds its commands through its ``register(app)``."""
    import importlib

    for name in ("certify", "design", "report", "reproduce", "teacher", "train", "verify"):
        importlib.import_module(f"{__package__}.{name}").register(app)


_INVOCATION: ContextVar[list[str]] = ContextVar("invocation", default=["audit"])


def current_command() -> list[str]:
    """The command line of this run, as recorded in reports (``audit`` and its arguments)."""
    return list(_INVOCATION.get())


def fail(message: str) -> None:
    """Print a one-line error and exit with code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _interrupted() -> None:
    print("error: interrupted", file=sys.stderr)
    raise SystemExit(130)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    _INVOCATION.set(["audit", *argv])
    try:
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


# Last, so that command modules can import the helpers above.
_register_commands()
