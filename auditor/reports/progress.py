"""Progress on the terminal: a bar over an audit's batches that appears only when the audit takes
a while, and one over a training run's epochs."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .rows import fmt

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

SHOW_AFTER_S = 1.0  # audits shorter than this never draw a bar


class BatchProgress:
    """Callable per batch with its row count (the ``progress`` of :func:`auditor.audit.pipeline.run_audit`).

    The bar (rich, transient, on stderr unless another console is given, so that stdout keeps
    only what the command prints there, e.g. ``--json``) is drawn once the audit has run for
    ``show_after`` seconds, so short audits print nothing; a disabled one only counts.
    """

    def __init__(self, enabled: bool = True, show_after: float = SHOW_AFTER_S, console=None):
        self.enabled = enabled
        self.show_after = show_after
        self.console = console
        self.total: int | None = None
        self.done = 0
        self._started_at = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def begin(self, total: int) -> None:
        self.total, self.done, self._started_at = total, 0, time.monotonic()

    def __call__(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._started_at < self.show_after:
                return
            self._open()
        assert self._bar is not None and self._task is not None  # opened above, or before
        self._bar.update(self._task, completed=self.done)

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = self.console if self.console is not None else Console(stderr=True)
        self._bar = Progress(
            TextColumn("auditing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            refresh_per_second=4,
        )
        self._bar.start()
        self._task = self._bar.add_task("audit", total=self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_wanted(quiet: bool, *streams) -> bool:
    """A bar only when output goes to an interactive terminal (stdout and stderr), never with --quiet."""
    streams = streams or (sys.stdout, sys.stderr)
    return not quiet and all(getattr(stream, "isatty", lambda: False)() for stream in streams)


@contextlib.contextmanager
def epoch_progress(total: int, quiet: bool, label: str = "training") -> Iterator[Callable[[dict], None]]:
    """A rich bar, one tick per epoch, showing loss, reconstruction, KL and the live margin.

    Disabled with ``quiet`` or when stderr is not a terminal; yields the trainer's ``on_epoch``.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=False,
    )
    with progress:
        task = progress.add_task(label, total=total, stats="")

        def on_epoch(row: dict) -> None:
            stats = (
                f"loss {fmt(row['loss'], 2)} recon {fmt(row['recon'], 2)} KL {fmt(row['kl'], 2)} "
                f"margin {fmt(row['margin'], 3)}"
            )
            progress.update(task, completed=row["epoch"], stats=stats)

        yield on_epoch
