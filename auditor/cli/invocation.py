"""The command line of the running ``audit`` invocation, as the reports record it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_INVOCATION: ContextVar[tuple[str, ...]] = ContextVar("invocation", default=("audit",))


@contextlib.contextmanager
def recording_invocation(argv: list[str]) -> Iterator[None]:
    """Within this block :func:`current_command` returns ``argv``."""
    token = _INVOCATION.set(tuple(argv))
    try:
        yield
    finally:
        _INVOCATION.reset(token)


def current_command() -> list[str]:
    """The command line of this run, as recorded in reports (``audit`` and its arguments)."""
    return list(_INVOCATION.get())
