"""``audit teacher fit`` and ``audit teacher search``: make the PCA → GMM ``teacher.pt``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer

from ..certificate.design import DEFAULT_BETA, DEFAULT_ENERGY_BUDGET, teacher_energy, teacher_information
from ..errors import AuditInputError
from ..reports.escape import terminal_text
from ..sources.atomic import require_writable_file
from ..sources.datasets.dataset import Dataset
from ..sources.datasets.features import dataset_features
from ..sources.datasets.options import DataOptions
from ..sources.datasets.registry import open_dataset
from ..sources.teachers.files import save_searched_teacher, save_teacher
from ..sources.witness_file import WitnessSettings, save_witness
from ..teachers.fit import fit_pca_gmm, teacher_probabilities
from ..teachers.search import (
    DEFAULT_CLASSES,
    DEFAULT_HOLDOUT_EVERY,
    DEFAULT_RANKS,
    DEFAULT_TEMPERATURES,
    holdout_split,
    score_candidates,
    search_sidecar_path,
    sidecar_path,
)
from .data_flags import COLUMN, IMAGE_SIZE, TEST_EVERY, data_options

teacher_app = typer.Typer(
    help="Fit or search the unsupervised PCA → diagonal-GMM teacher (teacher.pt, docs/formats.md).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def parse_list(flag: str, text: str, convert: Callable[[str], object]) -> list:
    """'8,16,32' → [8, 16, 32]; an empty list is allowed here and refused by the search."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [convert(item) for item in items]
    except ValueError:
        raise AuditInputError(f"{flag} must be a comma-separated list of numbers, got {text!r}") from None


def check_out_path(out: Path) -> None:
    require_writable_file(out, "--out", example="teacher.pt")
    if out.suffix.lower() == ".pt2":
        raise AuditInputError(f"--out {out}: .pt2 is the suffix of torch.export programs; use .pt")


# Options both commands take, declared once.
DATA = typer.Option(..., "--data", help="'digits' or a data file/folder (see README).")
SPLIT = typer.Option("train", "--split", help="train (the default), test or all.")
LIMIT = typer.Option(None, "--limit", help="Use the first N samples of the split only.")
SEED = typer.Option(0, "--seed", help="Seed of PCA and GMM.")
N_INIT = typer.Option(2, "--n-init", help="GMM restarts (GaussianMixture n_init).")


def fit_inputs(out: Path, data: str, split: str, limit: int | None, reading: DataOptions) -> tuple[Dataset, np.ndarray]:
    """Check --out before any work, then read the split as the teacher's N×D [0, 1] inputs."""
    check_out_path(out)
    dataset = open_dataset(data, split, limit, role="data", options=reading)
    return dataset, dataset_features(dataset)


def data_record(dataset: Dataset, limit: int | None, reading: DataOptions) -> dict:
    return {
        "spec": dataset.spec,
        "split": dataset.split,
        "split_rule": dataset.split_rule,
        "limit": limit,
        "image_size": reading.image_size,
        "column": reading.column,
        "inputs": [{"path": r.path, "sha256": r.sha256} for r in dataset.inputs],
    }


@teacher_app.command("fit")
def fit(
    data: str = DATA,
    split: str = SPLIT,
    limit: int | None = LIMIT,
    image_size: str | None = IMAGE_SIZE,
    column: str | None = COLUMN,
    test_every: int | None = TEST_EVERY,
    rank: int = typer.Option(..., "--rank", help="PCA rank r (1 <= r <= min(N, D))."),
    num_classes: int = typer.Option(..., "--num-classes", help="GMM components K (2 <= K <= N)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Temperature τ > 0 of the posterior."),
    seed: int = SEED,
    n_init: int = N_INIT,
    out: Path = typer.Option(..., "--out", help="teacher.pt to write (atomically)."),
) -> None:
    """Fit one PCA → diagonal-GMM teacher and save it as teacher.pt."""
    dataset, x = fit_inputs(out, data, split, limit, data_options(image_size, column, test_every))
    teacher = fit_pca_gmm(x, rank, num_classes, temperature, seed, n_init=n_init)
    save_teacher(teacher, out)
    p = teacher_probabilities(teacher, x)
    print(
        terminal_text(
            f"teacher: rank {rank}, K {num_classes}, τ {temperature:g}, fitted on {len(x)} samples of "
            f"{data} ({dataset.split}); on them I_T = {teacher_information(p):.4f} nats, E_T = {teacher_energy(p):.2f}"
        )
    )
    print(terminal_text(f"wrote {out}"))


@teacher_app.command("search")
def search(
    data: str = DATA,
    split: str = SPLIT,
    limit: int | None = LIMIT,
    image_size: str | None = IMAGE_SIZE,
    column: str | None = COLUMN,
    test_every: int | None = TEST_EVERY,
    ranks: str = typer.Option(",".join(map(str, DEFAULT_RANKS)), "--ranks", help="PCA ranks to try."),
    classes: str = typer.Option(
        ",".join(map(str, DEFAULT_CLASSES)), "--classes", help="Numbers of components K to try."
    ),
    temperatures: str = typer.Option(
        ",".join(f"{t:g}" for t in DEFAULT_TEMPERATURES), "--temperatures", help="Temperatures τ to try."
    ),
    beta: float = typer.Option(DEFAULT_BETA, "--beta", help="Witness scale β the energy is computed for."),
    energy_budget: float = typer.Option(
        DEFAULT_ENERGY_BUDGET, "--energy-budget", help="Max prior cost ((K−1)/(2Kβ²))·E_T in nats."
    ),
    holdout_every: int = typer.Option(
        DEFAULT_HOLDOUT_EVERY, "--holdout-every", help="Hold out every M-th row of the split for scoring."
    ),
    seed: int = SEED,
    n_init: int = N_INIT,
    out: Path = typer.Option(..., "--out", help="teacher.pt to write; the table goes to <stem>.search.json beside it."),
) -> None:
    """Grid-search rank, K and τ; save the teacher with the largest held-out I_T within the energy budget."""
    from rich.console import Console

    grid = (
        parse_list("--ranks", ranks, int),
        parse_list("--classes", classes, int),
        parse_list("--temperatures", temperatures, float),
    )
    reading = data_options(image_size, column, test_every)
    dataset, x = fit_inputs(out, data, split, limit, reading)
    x_fit, x_holdout = holdout_split(x, holdout_every)
    result = score_candidates(x_fit, x_holdout, *grid, beta, energy_budget, seed, n_init)
    console = Console()
    console.print(search_table(result.table, beta, energy_budget, len(x_fit), len(x_holdout)))
    record = save_searched_teacher(
        result,
        out,
        beta=beta,
        energy_budget=energy_budget,
        seed=seed,
        n_init=n_init,
        data={
            **data_record(dataset, limit, reading),
            "holdout": f"row j of the split is held out when j % {holdout_every} == {holdout_every - 1}",
            "num_fit": len(x_fit),
            "num_holdout": len(x_holdout),
        },
    )
    sidecar = search_sidecar_path(out)
    chosen = record["chosen"]
    # The witness these numbers were computed for (offset 0; d is the model's choice, made later).
    witness = sidecar_path(out, "witness")
    save_witness(witness, WitnessSettings(int(chosen["K"]), beta, 0, None, record["teacher_sha256"]))
    console.print(
        f"chosen: rank {chosen['rank']}, K {chosen['K']}, τ {chosen['temperature']:g}: held-out "
        f"I_T = {chosen['I_T']:.4f} nats, E_T = {chosen['E_T']:.2f}, energy {chosen['energy']:.3f} nats"
    )
    print(terminal_text(f"wrote {out}, {sidecar} and {witness}"))


def search_table(table, beta: float, energy_budget: float, num_fit: int, num_holdout: int):
    from rich.table import Table

    view = Table(
        title=f"teacher candidates (fit {num_fit}, held-out {num_holdout} samples)",
        caption=f"energy = ((K−1)/(2Kβ²))·E_T nats at β = {beta:g}; budget {energy_budget:g} nats; "
        "I_T and E_T on the held-out rows",
    )
    for name in ("rank", "K", "τ", "I_T", "E_T", "energy", "fits", "conv.", "chosen"):
        view.add_column(name, justify="right")
    for row in table.itertuples(index=False):
        view.add_row(
            str(row.rank),
            str(row.K),
            f"{row.temperature:g}",
            f"{row.I_T:.4f}",
            f"{row.E_T:.2f}",
            f"{row.energy:.3f}",
            "yes" if row.within_budget else "no",
            "yes" if row.converged else "no",
            "◀" if row.chosen else "",
        )
    return view


def register(app: typer.Typer) -> None:
    app.add_typer(teacher_app, name="teacher")
