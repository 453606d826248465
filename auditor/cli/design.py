"""``audit design``: before training, what a teacher gives (I_T) and what its analytic code costs."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from ..certificate.design import DEFAULT_ENERGY_BUDGET, design_summary, design_table
from ..errors import AuditInputError
from ..reports.escape import rich_text
from ..sources.atomic import atomic_write_text, require_writable_file
from ..sources.datasets.features import dataset_probabilities
from ..sources.datasets.registry import open_dataset
from ..sources.hashing import sha256_file
from ..sources.teachers.files import load_teacher
from ..sources.witness_file import WitnessSettings, save_witness
from .data_flags import COLUMN, IMAGE_SIZE, TEST_EVERY, data_options


def design(
    teacher: Path = typer.Option(
        ..., "--teacher", help="teacher.pt (pca-gmm), or a .pt2 program with --trust-teacher-code."
    ),
    trust_teacher_code: bool = typer.Option(
        False, "--trust-teacher-code", help="Allow a .pt2 teacher, whose loading can run code."
    ),
    data: str = typer.Option(..., "--data", help="'digits' or a data file/folder (see README)."),
    split: str | None = typer.Option(None, "--split", help="train, test or all (default all)."),
    limit: int | None = typer.Option(None, "--limit", help="Use the first N samples only."),
    image_size: str | None = IMAGE_SIZE,
    column: str | None = COLUMN,
    test_every: int | None = TEST_EVERY,
    beta: float = typer.Option(..., "--beta", help="Witness scale β > 0."),
    latent_dim: int = typer.Option(..., "--latent-dim", help="Latent dimension d >= K − 1."),
    witness_offset: int = typer.Option(0, "--witness-offset", help="First latent row of the witness."),
    energy_budget: float = typer.Option(
        DEFAULT_ENERGY_BUDGET, "--energy-budget", help="Prior cost ½E‖μ*‖² (nats) to recommend β for."
    ),
    csv: Path | None = typer.Option(None, "--csv", help="Also write the margin–energy path as CSV (atomically)."),
    witness_out: Path | None = typer.Option(
        None, "--witness-out", help="Also write these witness settings as witness.json, for training and --witness."
    ),
) -> None:
    """Print I_T, E_T, the analytic code's energy, the margin–energy path and a recommended β."""
    from rich.console import Console
    from rich.table import Table

    for flag, out in (("--csv", csv), ("--witness-out", witness_out)):
        if out is not None:
            require_writable_file(out, flag)
    dataset = open_dataset(data, split, limit, role="data", options=data_options(image_size, column, test_every))
    model = load_teacher(teacher, trust_teacher_code, dataset.sample_shape)
    size = math.prod(dataset.sample_shape)
    if model.input_dim is not None and model.input_dim != size:
        raise AuditInputError(
            f"the teacher takes inputs of size {model.input_dim} but the data samples have size {size}"
        )
    p = dataset_probabilities(model.eval(), dataset)
    summary = design_summary(p, beta, latent_dim, energy_budget)
    table = design_table(p, beta, latent_dim, offset=witness_offset)

    console = Console()
    s = summary
    console.print(
        rich_text(
            f"teacher {teacher} on {data} ({dataset.split}, N = {s['num_samples']}), K = {s['num_classes']}, "
            f"d = {latent_dim}, β = {beta:g}"
        )
    )
    console.print(
        f"  I_T = {s['teacher_information']:.4f} nats   E_T = mean ‖ℓ(p)‖² = {s['E_T']:.3f} (p floored at {s['prob_floor']:g})\n"
        f"  analytic code: E‖μ*‖² = ((K−1)/(Kβ²))·E_T = {s['analytic_code_energy']:.3f}, "
        f"prior cost ½E‖μ*‖² = {s['prior_cost']:.3f} nats"
    )
    view = Table(title="margin–energy path μ_t = t·μ*(p)")
    for name in ("t", "margin Ĝ (nats)", "alignment loss L", "energy E‖μ_t‖²", "prior cost"):
        view.add_column(name, justify="right")
    for row in table.itertuples(index=False):
        view.add_row(
            f"{row.t:g}", f"{row.margin:.4f}", f"{row.alignment_loss:.4f}", f"{row.energy:.3f}", f"{row.prior_cost:.3f}"
        )
    console.print(view)
    verdict = "fits" if s["within_budget"] else "exceeds"
    console.print(
        f"at β = {beta:g} the full analytic code {verdict} the budget of {energy_budget:g} nats; "
        f"smallest β that fits: {s['recommended_beta']:.4g} (β = sqrt((K−1)·E_T / (2K·budget)))"
    )
    if csv is not None:
        atomic_write_text(csv, table.to_csv(index=False))
        console.print(rich_text(f"wrote {csv}"))
    if witness_out is not None:
        K = s["num_classes"]
        save_witness(witness_out, WitnessSettings(K, beta, witness_offset, latent_dim, sha256_file(teacher)))
        console.print(
            rich_text(f"wrote {witness_out} (K = {K}, β = {beta:g}, offset {witness_offset}, d = {latent_dim})")
        )


def register(app: typer.Typer) -> None:
    app.command("design")(design)
