"""``audit train``: the reference trainer (see :mod:`auditor.training`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..audit.distributed import device_for_rank, process_group, ranks_from_env
from ..errors import AuditInputError
from ..reports.escape import terminal_text
from ..reports.progress import epoch_progress
from ..reports.rows import fmt
from ..sources.atomic import require_writable_file
from ..training.config import TrainConfig
from ..training.device import training_device
from ..training.methods.registry import METHODS
from ..training.protocols import PROTOCOLS
from ..training.run import monitor_csv_path, train_to_file
from .data_flags import COLUMN, IMAGE_SIZE, TEST_EVERY, data_options


def parse_int_list(value: str | None, flag: str) -> tuple[int, ...] | None:
    """'128,64' → (128, 64); every entry a positive integer."""
    if value is None:
        return None
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise AuditInputError(f"{flag} must be comma-separated positive integers, got {value!r}") from None
    if not items or any(v < 1 for v in items):
        raise AuditInputError(f"{flag} must be comma-separated positive integers, got {value!r}")
    return items


def train(
    method: str | None = typer.Option(
        None, "--method", help=f"One of: {', '.join(METHODS)} (with --protocol: its default)."
    ),
    data: str = typer.Option(..., "--data", help="'digits' or a data file/folder (see README)."),
    split: str = typer.Option("train", "--split", help="train (the default), test or all."),
    image_size: str | None = IMAGE_SIZE,
    column: str | None = COLUMN,
    test_every: int | None = TEST_EVERY,
    teacher: Path = typer.Option(
        ..., "--teacher", help="teacher.pt (pca-gmm), the fixed teacher of the alignment and the monitor."
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds initialisation, batch order and noise."),
    out: Path = typer.Option(
        ..., "--out", help="Checkpoint to write (.safetensors); the monitor goes to the same name with .csv."
    ),
    epochs: int = typer.Option(60, "--epochs", help="ELBO epochs (a protocol's maximum)."),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate."),
    kl_weight: float | None = typer.Option(
        None, "--kl-weight", help="Weight on the KL term (default 1; --protocol collapse: 8)."
    ),
    align_weight: float | None = typer.Option(
        None,
        "--align-weight",
        help="α on the raw witness alignment loss of the aligned methods (default 10); an error with a method that does not align.",
    ),
    beta: float | None = typer.Option(None, "--beta", help="Witness scale β (default 2; --init: the checkpoint's)."),
    latent_dim: int | None = typer.Option(None, "--latent-dim", help="d (default 16)."),
    hidden: str | None = typer.Option(None, "--hidden", help="mlp hidden sizes, e.g. 128 or 256,256 (default 128)."),
    arch: str | None = typer.Option(
        None, "--arch", help="mlp (default) or conv (C×H×W images, H and W divisible by 2^len(channels))."
    ),
    channels: str | None = typer.Option(None, "--channels", help="conv channels (default 32,64,128)."),
    likelihood: str = typer.Option("bernoulli", "--likelihood", help="bernoulli or gaussian decoder."),
    free_bits: float = typer.Option(0.25, "--free-bits", help="λ nats per latent dimension (free-bits)."),
    anneal_epochs: float = typer.Option(10.0, "--anneal-epochs", help="Linear KL warm-up length (kl-anneal)."),
    cycles: int = typer.Option(4, "--cycles", help="M cycles (cyclical)."),
    cycle_ratio: float = typer.Option(0.5, "--cycle-ratio", help="R: fraction of each cycle spent rising (cyclical)."),
    prefit_epochs: int = typer.Option(
        10, "--prefit-epochs", help="Epochs regressing μ onto the analytic code first (prefit)."
    ),
    init: Path | None = typer.Option(
        None, "--init", help="Checkpoint to resume from (its architecture and witness are kept)."
    ),
    protocol: str | None = typer.Option(
        None, "--protocol", help=f"{' | '.join(PROTOCOLS)}: continue --init until done (see README)."
    ),
    threads: int = typer.Option(
        1,
        "--threads",
        help="CPU threads while training (1: the same bytes every run; more may round differently under load).",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu or cuda."),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        help="fp32 or bf16: autocast of the model's forward passes (losses and monitor stay fp32/fp64).",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run recorded in X.resume.pt (without one: start from the beginning)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or summary."),
) -> int:
    """Train a VAE (optionally aligned with the simplex witness) and write a certifiable checkpoint.

    Under torchrun (several processes, GPUs or nodes) the batches are shared out among the ranks
    and only rank 0 writes (see docs/training.md)."""
    if likelihood not in ("bernoulli", "gaussian"):
        raise AuditInputError(f"unknown --likelihood {likelihood!r} (use bernoulli or gaussian)")
    cfg = TrainConfig(
        method=method,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        kl_weight=kl_weight,
        align_weight=align_weight,
        beta=beta,
        latent_dim=latent_dim,
        hidden=parse_int_list(hidden, "--hidden"),
        arch=arch,
        channels=parse_int_list(channels, "--channels"),
        likelihood=likelihood,
        free_bits=free_bits,
        anneal_epochs=anneal_epochs,
        cycles=cycles,
        cycle_ratio=cycle_ratio,
        prefit_epochs=prefit_epochs,
        protocol=protocol,
        threads=threads,
        device=device,
        precision=precision,
    )
    require_writable_file(out, "--out", example="model.safetensors")  # with its monitor CSV and resume file
    reading = data_options(image_size, column, test_every)
    total = epochs + (prefit_epochs if method == "prefit" else 0)
    ranks = ranks_from_env()
    run_device = device_for_rank(training_device(device), ranks)
    label, show = method or protocol or "training", not quiet and ranks.is_main
    with process_group(run_device, ranks, skip_hashing=False), epoch_progress(total, not show, label) as on_epoch:
        result = train_to_file(
            cfg, data, split, teacher, out, init, on_epoch, reading, resume=resume, ranks=ranks, device=run_device
        )
    if not ranks.is_main:
        return 0  # rank 0 writes and prints (see audit certify for why the others exit 0)
    if not quiet:
        last = result.history[-1]
        verdict = "certified" if last["certified"] else "not certified"
        print(
            terminal_text(
                f"wrote {out} and {monitor_csv_path(out)}: {result.epochs_run} epochs ({result.config.method}"
                f"{', protocol ' + result.config.protocol if result.config.protocol else ''}, stopped by {result.stopped_by}); "
                f"training-data margin {last['margin']:.4f}, LCB {fmt(last['margin_lcb'], 3)} → {verdict} on {split}"
            )
        )
    return 0


def register(app: typer.Typer) -> None:
    app.command("train")(train)
