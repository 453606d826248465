"""``audit reproduce``: the experiment table over seeds on one data set (see :mod:`auditor.training.reproduce`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import AuditInputError
from ..training.reproduce import DEFAULT_EPOCHS, DEFAULT_ROWS, markdown_table, parse_seeds, reproduce, select_rows
from .data_flags import COLUMN, IMAGE_SIZE, TEST_EVERY, data_options

# Named here, not in the default below: mypy misreads a generator in a default (python/mypy#9346).
_ROW_NAMES = ", ".join(r.name for r in DEFAULT_ROWS)


def reproduce_command(
    data: str = typer.Option(
        ..., "--data", help="'digits' or a data file/folder (data without a split of their own follow --test-every)."
    ),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Comma-separated seeds."),
    out: Path = typer.Option(..., "--out", help="Folder for runs.csv, table.csv and table.md."),
    models_out: Path | None = typer.Option(
        None, "--models-out", help="Folder for the checkpoints (and their monitor CSVs) of --save-seeds."
    ),
    teacher: Path | None = typer.Option(None, "--teacher", help="teacher.pt (default: <models-out>/teacher.pt)."),
    epochs: int = typer.Option(DEFAULT_EPOCHS, "--epochs", help="ELBO epochs per run (a protocol's maximum)."),
    rows: str | None = typer.Option(None, "--rows", help=f"Comma-separated subset of: {_ROW_NAMES}."),
    save_seeds: str | None = typer.Option(
        None, "--save-seeds", help="Seeds whose checkpoints go to --models-out (default: the first)."
    ),
    image_size: str | None = IMAGE_SIZE,
    column: str | None = COLUMN,
    test_every: int | None = TEST_EVERY,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or table."),
) -> int:
    """Train and certify the experiment table (vanilla/aligned at KL 1,2,4,8, prefit, baselines, collapse, rescue)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    reading = data_options(image_size, column, test_every)
    seed_list = parse_seeds(seeds)
    keep = parse_seeds(save_seeds) if save_seeds is not None else None
    if keep is not None and (models_out is None or not set(keep) <= set(seed_list)):
        raise AuditInputError("--save-seeds needs --models-out and must be a subset of --seeds")
    if teacher is None:
        if models_out is None:
            raise AuditInputError("give --teacher (or --models-out holding teacher.pt)")
        teacher = models_out / "teacher.pt"
    chosen = select_rows(None if rows is None else [r.strip() for r in rows.split(",") if r.strip()])
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )
    with progress:
        task = progress.add_task("reproduce", total=len(chosen) * len(seed_list))
        started: list[str] = []

        def on_run(label: str) -> None:
            if started:
                progress.advance(task)
            started.append(label)
            progress.update(task, description=label)

        summary = reproduce(data, seed_list, out, teacher, models_out, epochs, chosen, keep, on_run, reading)
        progress.advance(task)
    if not quiet:
        print(markdown_table(summary), end="")
        print(f"wrote {out / 'table.md'}, {out / 'table.csv'} and {out / 'runs.csv'}")
    return 0


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce_command)
