"""``audit reproduce``: the experiment table over seeds on one data set (see :mod:`auditor.training.reproduce`),
or a paper's protocol with ``--preset`` (see :mod:`auditor.training.presets`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import AuditInputError
from ..reports.escape import terminal_text
from ..sources.atomic import require_writable_folder
from ..training.presets.registry import PRESETS, get_preset
from ..training.presets.run import reproduce_preset
from ..training.reproduce import DEFAULT_EPOCHS, DEFAULT_ROWS, markdown_table, parse_seeds, reproduce, select_rows
from .data_flags import COLUMN, IMAGE_SIZE, TEST_EVERY, data_options

# Named here, not in the default below: mypy misreads a generator in a default (python/mypy#9346).
_ROW_NAMES = ", ".join(r.name for r in DEFAULT_ROWS)
_PRESET_NAMES = ", ".join(PRESETS)


def reproduce_command(
    data: str = typer.Option(
        ..., "--data", help="'digits' or a data file/folder (data without a split of their own follow --test-every)."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help=f"A paper's protocol: {_PRESET_NAMES} (teachers searched, folder layout in docs)."
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Comma-separated seeds (default 0,1,2,3,4; a preset's own)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for runs.csv, table.csv and table.md (a preset's whole run)."),
    models_out: Path | None = typer.Option(
        None, "--models-out", help="Folder for the checkpoints (and their monitor CSVs) of --save-seeds."
    ),
    teacher: Path | None = typer.Option(None, "--teacher", help="teacher.pt (default: <models-out>/teacher.pt)."),
    epochs: int | None = typer.Option(
        None, "--epochs", help=f"ELBO epochs per run, a protocol's maximum (default {DEFAULT_EPOCHS}; a preset's own)."
    ),
    rows: str | None = typer.Option(
        None, "--rows", help=f"Comma-separated subset of the rows (default table: {_ROW_NAMES})."
    ),
    save_seeds: str | None = typer.Option(
        None, "--save-seeds", help="Seeds whose checkpoints go to --models-out (default: the first)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu or cuda, for training and certificates (default cpu; with --preset auto)."
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16 training forward passes."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="With --preset: KEY=VALUE changes a shared setting or search.KEY (repeatable)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="With --preset: keep finished runs and teachers, continue unfinished runs."
    ),
    image_size: str | None = IMAGE_SIZE,
    column: str | None = COLUMN,
    test_every: int | None = TEST_EVERY,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or table."),
) -> int:
    """Train and certify the experiment table (vanilla/aligned at KL 1,2,4,8, prefit, baselines, collapse, rescue),
    or with --preset a paper's protocol on its data (cifar100, tinyimagenet, mnist)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    for flag, folder in (("--out", out), ("--models-out", models_out)):
        if folder is not None:
            require_writable_folder(folder, flag)
    reading = data_options(image_size, column, test_every)
    seed_list = parse_seeds(seeds) if seeds is not None else None
    row_names = None if rows is None else [r.strip() for r in rows.split(",") if r.strip()]
    keep = None
    if preset is not None:
        chosen_preset = get_preset(preset)
        given = [
            flag
            for flag, value in (("--teacher", teacher), ("--models-out", models_out), ("--save-seeds", save_seeds))
            if value
        ]
        if given:
            raise AuditInputError(
                f"--preset searches its own teachers and keeps every checkpoint under --out: drop {', '.join(given)}"
            )
        chosen = select_rows(row_names, chosen_preset.rows)
        total = len(chosen) * len(seed_list if seed_list is not None else chosen_preset.seeds)
    else:
        if overrides or resume:
            raise AuditInputError("--set and --resume go with --preset")
        seed_list = seed_list if seed_list is not None else [0, 1, 2, 3, 4]
        keep = parse_seeds(save_seeds) if save_seeds is not None else None
        if keep is not None and (models_out is None or not set(keep) <= set(seed_list)):
            raise AuditInputError("--save-seeds needs --models-out and must be a subset of --seeds")
        if teacher is None:
            if models_out is None:
                raise AuditInputError("give --teacher (or --models-out holding teacher.pt)")
            teacher = models_out / "teacher.pt"
        chosen = select_rows(row_names)
        total = len(chosen) * len(seed_list)
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
        task = progress.add_task("reproduce", total=total)
        started: list[str] = []

        def on_run(label: str) -> None:
            if started:
                progress.advance(task)
            started.append(label)
            progress.update(task, description=label)

        if preset is not None:
            summary = reproduce_preset(
                chosen_preset,
                data,
                out,
                seed_list,
                epochs,
                row_names,
                device or "auto",
                precision,
                overrides or [],
                resume,
                on_run,
                reading,
            )
        else:
            assert teacher is not None and seed_list is not None  # set above
            summary = reproduce(
                data,
                seed_list,
                out,
                teacher,
                models_out,
                epochs if epochs is not None else DEFAULT_EPOCHS,
                chosen,
                keep,
                on_run,
                reading,
                device or "cpu",
                precision,
            )
        progress.advance(task)
    if not quiet:
        print(markdown_table(summary), end="")
        print(terminal_text(f"wrote {out / 'table.md'}, {out / 'table.csv'} and {out / 'runs.csv'}"))
    return 0


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce_command)
