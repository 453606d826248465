"""The per-epoch monitor's rows (``X.csv``, docs/training.md): what each epoch trained and what the
certificate of the training data was after it."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..certificate.numbers import CertificateNumbers
from ..certificate.verdict import decide

CSV_COLUMNS = (
    "epoch",
    "phase",
    "kl_weight",
    "align_weight",
    "loss",
    "recon",
    "kl",
    "align_batch",
    "margin",
    "margin_lcb",
    "certified",
    "teacher_information",
    "alignment_loss",
    "escape_force",
    "active_units",
    "mean_sq_norm",
    "mean_prior_kl",
    "witness_agreement",
    "max_abs_deviation_from_mean",
)
PHASES = ("init", "prefit", "elbo")
TEXT_COLUMNS = ("epoch", "phase", "certified")


def history_row(
    epoch: int,
    phase: str,
    sums: dict[str, float],
    count: int,
    weights: tuple[float, float],
    numbers: CertificateNumbers,
) -> dict:
    """One CSV row: the epoch's training-batch means (``sums`` over ``count`` samples) and its monitor."""
    diag = numbers.diagnostics
    mean = {k: (v / count if count else float("nan")) for k, v in sums.items()}
    return {
        "epoch": epoch,
        "phase": phase,
        "kl_weight": weights[0],
        "align_weight": weights[1],
        "loss": mean.get("loss", float("nan")),
        "recon": mean.get("recon", float("nan")),
        "kl": mean.get("kl", float("nan")),
        "align_batch": mean.get("align", float("nan")),
        "margin": numbers.margin,
        "margin_lcb": numbers.margin_lcb(0.95),
        "certified": decide(numbers, 0.95, 0.0).certified,
        "teacher_information": numbers.teacher_information,
        "alignment_loss": numbers.alignment_loss,
        "escape_force": diag["escape_force"],
        "active_units": diag["active_units"],
        "mean_sq_norm": diag["mean_sq_norm"],
        "mean_prior_kl": diag["mean_prior_kl"],
        "witness_agreement": diag["witness_agreement"],
        "max_abs_deviation_from_mean": diag["max_abs_deviation_from_mean"],
    }


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def read_history_csv(path: Path) -> list[dict] | None:
    """The rows of a monitor CSV this tool wrote, typed as :func:`history_row` makes them; None
    when the file is missing or is not such a CSV."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        history = []
        for i, row in enumerate(rows):
            if tuple(row) != CSV_COLUMNS or int(row["epoch"]) != i or row["phase"] not in PHASES:
                return None
            if row["certified"] not in ("True", "False"):
                return None
            typed: dict = {k: (None if v == "" else float(v)) for k, v in row.items() if k not in TEXT_COLUMNS}
            typed.update(epoch=i, phase=row["phase"], certified=row["certified"] == "True")
            typed = {k: typed[k] for k in CSV_COLUMNS}
            if typed["active_units"] is not None and math.isfinite(typed["active_units"]):
                typed["active_units"] = int(typed["active_units"])
            history.append(typed)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return history or None
