"""``audit reproduce``: the experiment table — every row trained over seeds, each checkpoint certified.

A row is a :class:`Row`: a method with its settings, or a protocol continuing an earlier row's
checkpoint of the same seed. :data:`DEFAULT_ROWS` is the table of the issue (vanilla and aligned at
KL weights 1, 2, 4, 8; prefit; the four standard baselines; collapse; rescue). To add rows, pass
``rows=[*DEFAULT_ROWS, Row(...)]`` to :func:`reproduce` (or append to ``DEFAULT_ROWS`` at import).

Every checkpoint is written by the trainer (:func:`auditor.training.run.train_and_save`) and certified on
the data's held-out **test** split through :func:`auditor.audit.pipeline.run_audit` — exactly what
``audit certify`` does (confidence 0.95, δ = 0). :func:`reproduce` returns the summary table as
a pandas DataFrame (one row per table row: mean and standard deviation over seeds, certified
count) and writes ``runs.csv`` (one line per row and seed), ``table.csv`` and ``table.md``.

:func:`run_row` (one row and seed: train, certify, optionally the post-hoc probe) and
:func:`run_seed` (every row of one seed, each against its teacher) are shared with the papers'
presets (:mod:`auditor.training.presets`), which search several teachers and run on a GPU.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..audit.diagnostics import headline_numbers
from ..audit.pipeline import run_audit
from ..audit.request import AuditRequest
from ..errors import AuditInputError
from ..nets.likelihood import reconstruction_nll
from ..sources.arrays import row_ranges
from ..sources.atomic import atomic_write_text
from ..sources.checkpoint import load_checkpoint
from ..sources.datasets.dataset import to_unit_float
from ..sources.datasets.options import DataOptions
from ..sources.hashing import sha256_file
from ..sources.models.encode import encode_means
from ..sources.teachers.files import load_teacher
from .config import TrainConfig
from .probe import PROBE_COLUMNS, latent_means, probe_scores
from .run import TrainingData, load_training_data, read_split, teacher_probabilities_on, train_and_save

DEFAULT_EPOCHS = 40
CONFIDENCE, MIN_MARGIN = 0.95, 0.0


@dataclass(frozen=True)
class Row:
    name: str
    method: str | None = None
    settings: dict = field(default_factory=dict)  # TrainConfig fields other than method/seed/epochs
    protocol: str | None = None
    init_from: str | None = None  # the row whose checkpoint (same seed) the protocol continues
    teacher: int = 0  # which of the run's teachers (a preset may search several) the row trains against


def kl_weight_rows(weights: tuple[int, ...]) -> tuple[Row, ...]:
    """The KL-weight stress rows: vanilla, then aligned, at each weight."""
    return tuple(
        Row(f"{method}-kl{w}", method, {"kl_weight": float(w)}) for method in ("vanilla", "aligned") for w in weights
    )


# The standard VAE baselines every table carries: β < 1, free bits, KL annealing, cyclical annealing.
BASELINE_ROWS = (
    Row("beta-0.5", "beta", {"kl_weight": 0.5}),
    Row("free-bits", "free-bits"),
    Row("kl-anneal", "kl-anneal"),
    Row("cyclical", "cyclical"),
)

DEFAULT_ROWS: list[Row] = [
    *kl_weight_rows((1, 2, 4, 8)),
    Row("prefit", "prefit"),
    *BASELINE_ROWS,
    Row("collapse", protocol="collapse", init_from="aligned-kl1"),
    Row("rescue", protocol="rescue", init_from="collapse"),
    # Other decoder families (issue 6), plain and aligned; vanilla-gaussian is const-var's control
    # (same unit-variance gaussian decoder, per-sample posterior variances).
    Row("lidvae", "lidvae"),
    Row("lidvae-aligned", "lidvae-aligned"),
    # A strongly injective decoder: α = 1 and s_min = 1 bound σ_min of its Jacobian (logits) by 1.
    Row("lidvae-strong", "lidvae", {"extra": {"convexity": 1.0, "singular_values": [1.0, 4.0]}}),
    Row("const-var", "const-var"),
    Row("const-var-aligned", "const-var-aligned"),
    Row("vanilla-gaussian", "vanilla", {"likelihood": "gaussian"}),
]

# (column, heading) of the per-seed numbers summarised in the table, in table order.
METRICS = [
    ("teacher_information", "I_T"),
    ("alignment_loss", "L"),
    ("margin", "margin Ĝ"),
    ("margin_lcb", "LCB"),
    ("reconstruction", "recon"),
    ("prior_kl", "KL"),
    ("mean_sq_norm", "E‖μ‖²"),
    ("active_units", "active units"),
    # Model diagnostics (auditor.diagnostics_model; README "Model diagnostics").
    ("mutual_information", "MI"),
    ("self_consistency_latent", "SC z"),
    ("self_consistency_data", "SC x"),
    ("ima_contrast", "IMA"),
    ("identifiability_gap", "ID gap"),
]
# The post-hoc probe's columns (auditor.training.probe): beside the certificate, never part of it.
PROBE_METRICS = list(zip(PROBE_COLUMNS, ("probe acc", "probe CE", "probe H(p̄)−CE")))


def select_rows(names: Sequence[str] | None, rows: Sequence[Row] = DEFAULT_ROWS) -> list[Row]:
    """The rows named (all when None), checking that every protocol row's source row is there too."""
    by_name = {row.name: row for row in rows}
    if names is None:
        chosen = list(rows)
    else:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise AuditInputError(f"unknown row {', '.join(unknown)} (known: {', '.join(by_name)})")
        chosen = [row for row in rows if row.name in set(names)]
    for i, row in enumerate(chosen):
        if row.init_from is not None and row.init_from not in {r.name for r in chosen[:i]}:
            raise AuditInputError(f"row {row.name} continues row {row.init_from}: select that row too")
    return chosen


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise AuditInputError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise AuditInputError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


@torch.no_grad()
def test_reconstruction(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> float:
    """Mean −log p(x | z = μ(x)) in nats over ``x``, under the model's likelihood."""
    model.to(device)
    total = 0.0
    for begin, end in row_ranges(0, len(x), batch_size):
        xb = to_unit_float(x[begin:end].to(device))
        mu, _ = encode_means(model, xb)
        total += float(reconstruction_nll(model, xb, mu).sum())
    return total / len(x)


def certify_run(
    checkpoint: Path,
    teacher: Path,
    data: str,
    x_test: torch.Tensor,
    reading: DataOptions | None = None,
    device: str = "cpu",
) -> dict:
    """The certificate of one checkpoint on the test split, plus its test reconstruction."""
    reading = reading or DataOptions()
    result = run_audit(
        AuditRequest(
            model=checkpoint,
            teacher=teacher,
            data=data,
            split="test",
            image_size=reading.image_size,
            column=reading.column,
            test_every=reading.test_every,
            confidence=CONFIDENCE,
            min_margin=MIN_MARGIN,
            device=device,
        )
    )
    n, diag = result.numbers, result.numbers.diagnostics
    return {
        "certified": bool(result.verdict.certified),
        "teacher_information": n.teacher_information,
        "alignment_loss": n.alignment_loss,
        "margin": n.margin,
        "margin_lcb": result.verdict.margin_lcb,
        "reconstruction": test_reconstruction(load_checkpoint(checkpoint).model, x_test, device=device),
        "prior_kl": diag["mean_prior_kl"],
        "mean_sq_norm": diag["mean_sq_norm"],
        "active_units": diag["active_units"],
        "num_test_samples": n.num_samples,
        **headline_numbers(diag.get("model")),
    }


@dataclass
class TeacherRun:
    """One teacher and what the rows trained against it read: the training data with the
    teacher's probabilities, and its probabilities on the test split (for the probe)."""

    path: Path
    inputs: TrainingData
    p_test: torch.Tensor | None = None  # N_test×K float64; needed by the probe only


@dataclass
class RunOptions:
    """How every row of a table is run."""

    epochs: int = DEFAULT_EPOCHS
    settings: dict = field(default_factory=dict)  # TrainConfig fields under each row's own (a preset's)
    device: str = "cpu"
    precision: str = "fp32"
    resume: bool = False  # continue unfinished runs, keep finished ones (auditor.training.run)
    probe: bool = False  # add the post-hoc probe's columns (auditor.training.probe)
    reading: DataOptions | None = None  # how to read the data (image size, column, split rule)


def run_row(
    row: Row,
    seed: int,
    teacher: TeacherRun,
    data: str,
    x_test: torch.Tensor,
    out: Path,
    init: Path | None,
    options: RunOptions,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Train one (row, seed) into ``out`` and certify it: its line of ``runs.csv``."""
    cfg = TrainConfig(
        method=row.method,
        seed=seed,
        epochs=options.epochs,
        protocol=row.protocol,
        device=options.device,
        precision=options.precision,
        **{**options.settings, **row.settings},
    )
    result = train_and_save(cfg, teacher.inputs, out, init, on_epoch, resume=options.resume)
    record = {
        "row": row.name,
        "method": result.config.method,
        "protocol": row.protocol or "",
        "kl_weight": result.config.kl_weight,
        "seed": seed,
        "teacher": str(teacher.path),
        "epochs_run": result.epochs_run,
        "stopped_by": result.stopped_by,
        **certify_run(out, teacher.path, data, x_test, options.reading, result.config.device),
    }
    if options.probe:
        assert teacher.p_test is not None  # a table with the probe computes them (auditor.training.presets)
        device = torch.device(result.config.device)
        mu_train, mu_test = (latent_means(result.model, x, device) for x in (teacher.inputs.x, x_test))
        record.update(probe_scores(mu_train, teacher.inputs.p.numpy(), mu_test, teacher.p_test.numpy()))
    return record


def run_seed(
    data: str,
    seed: int,
    teachers: Mapping[int, TeacherRun],
    rows: Sequence[Row],
    x_test: torch.Tensor,
    where: Path,
    options: RunOptions,
    on_run: Callable[[str], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Every row for one seed, each against its teacher (``teachers[row.teacher]``); checkpoints go
    to ``where`` as ``<row>-s<seed>.safetensors`` (protocol rows continue their source row's), and
    each record names its checkpoint and that file's sha256."""
    paths: dict[str, Path] = {}
    records = []
    for row in rows:
        if on_run:
            on_run(f"{row.name} seed {seed}")
        out = where / f"{row.name}-s{seed}.safetensors"
        init = paths[row.init_from] if row.init_from else None
        record = run_row(row, seed, teachers[row.teacher], data, x_test, out, init, options)
        records.append({**record, "checkpoint": str(out), "sha256": sha256_file(out)})
        paths[row.name] = out
        if on_record:
            on_record(records[-1])
    return records


def teacher_on_test(teacher: Path, x_test: torch.Tensor, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """The teacher's probabilities (float64) on the test samples."""
    return teacher_probabilities_on(load_teacher(teacher, False, sample_shape).eval(), x_test, 4096)


def run_rows(
    data: str,
    seeds: Sequence[int],
    teacher: Path,
    models_dir: Path,
    rows: Sequence[Row],
    epochs: int = DEFAULT_EPOCHS,
    on_run: Callable[[str], None] | None = None,
    save_seeds: Sequence[int] | None = None,
    reading: DataOptions | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> pd.DataFrame:
    """Train and certify every (row, seed): one line each. Checkpoints of ``save_seeds`` (default:
    all) go to ``models_dir`` as ``<row>-s<seed>.safetensors``; the others to a temporary folder.
    ``reading`` says how to read ``data`` (its image size, column and split rule)."""
    inputs = load_training_data(data, "train", teacher, reading)
    _, x_test = read_split(data, "test", reading)
    teachers = {0: TeacherRun(Path(teacher), inputs)}
    options = RunOptions(epochs=epochs, device=device, precision=precision, reading=reading)
    keep = set(seeds if save_seeds is None else save_seeds)
    records = []
    with tempfile.TemporaryDirectory(prefix="vae-audit-reproduce-") as scratch:
        for seed in seeds:
            where = Path(models_dir) if seed in keep else Path(scratch)
            for record in run_seed(data, seed, teachers, rows, x_test, where, options, on_run):
                records.append(record if seed in keep else {**record, "checkpoint": ""})  # not kept: no path
    return pd.DataFrame.from_records(records)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per row (in first-seen order): settings, certified count, mean and std (ddof 1) of METRICS
    (and of the probe's columns when the runs have them)."""
    out = []
    for name, group in runs.groupby("row", sort=False):
        first = group.iloc[0]
        line = {
            "row": name,
            "method": first["method"],
            "protocol": first["protocol"],
            "kl_weight": first["kl_weight"],
            "seeds": len(group),
            "certified": int(group["certified"].sum()),
            "epochs_run_mean": float(group["epochs_run"].mean()),
        }
        for column, _ in METRICS + (PROBE_METRICS if "probe_margin" in runs else []):
            values = group[column].astype(float)
            line[f"{column}_mean"] = float(values.mean())
            line[f"{column}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        out.append(line)
    return pd.DataFrame(out)


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def markdown_table(summary: pd.DataFrame) -> str:
    head = ["row", "method", "KL weight", "certified", *[h for _, h in METRICS], "epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        method = r["method"] + (f" ({r['protocol']})" if r["protocol"] else "")
        cells = [r["row"], method, f"{r['kl_weight']:g}", f"{r['certified']}/{r['seeds']}"]
        for column, _ in METRICS:
            cells.append(_pm(r[f"{column}_mean"], r[f"{column}_std"], 1 if column == "active_units" else 3))
        cells.append(f"{r['epochs_run_mean']:g}")
        lines.append("| " + " | ".join(cells) + " |")
    if "probe_margin_mean" in summary:
        lines += [
            "",
            PROBE_HEADING,
            "",
            "| row | certified | margin Ĝ | " + " | ".join(h for _, h in PROBE_METRICS) + " |",
        ]
        lines.append("|" + "---|" * (3 + len(PROBE_METRICS)))
        for _, r in summary.iterrows():
            cells = [r["row"], f"{r['certified']}/{r['seeds']}", _pm(r["margin_mean"], r["margin_std"], 3)]
            cells += [_pm(r[f"{column}_mean"], r[f"{column}_std"], 3) for column, _ in PROBE_METRICS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PROBE_HEADING = (
    "Post-hoc predictability baseline — **not the certificate**: a logistic-regression probe fitted on μ "
    "of the training split after training, scored on the test split (docs/reproduce.md). A fitted probe "
    "can read the teacher out of means that the raw witness cannot certify."
)


def reproduce(
    data: str,
    seeds: Sequence[int],
    out: Path,
    teacher: Path,
    models_out: Path | None = None,
    epochs: int = DEFAULT_EPOCHS,
    rows: Sequence[Row] = DEFAULT_ROWS,
    save_seeds: Sequence[int] | None = None,
    on_run: Callable[[str], None] | None = None,
    reading: DataOptions | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> pd.DataFrame:
    """Run the table and write ``runs.csv``, ``table.csv`` and ``table.md`` into ``out``.

    Checkpoints go to ``models_out`` (only the seeds in ``save_seeds``, default the first seed;
    without ``models_out``, none is kept). Returns the summary DataFrame.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise AuditInputError(f"--epochs must be a positive integer, got {epochs}")
    if not Path(teacher).is_file():
        raise AuditInputError(
            f"{teacher}: no such teacher file (make one with `audit teacher search --data {data} --out {teacher}`)"
        )
    rows = select_rows([r.name for r in rows], rows)
    keep = ([] if models_out is None else list(seeds[:1])) if save_seeds is None else list(save_seeds)
    with tempfile.TemporaryDirectory(prefix="vae-audit-models-") as scratch:
        where = Path(models_out) if models_out else Path(scratch)
        runs = run_rows(data, seeds, Path(teacher), where, rows, epochs, on_run, keep, reading, device, precision)
    return write_tables(runs, Path(out))


def write_tables(runs: pd.DataFrame, out: Path) -> pd.DataFrame:
    """``runs.csv``, ``table.csv`` and ``table.md`` of ``runs`` into ``out``; returns the summary."""
    summary = summarize(runs)
    atomic_write_text(out / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(out / "table.csv", summary.to_csv(index=False))
    atomic_write_text(out / "table.md", markdown_table(summary))
    return summary
