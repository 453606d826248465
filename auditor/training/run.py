"""``audit train`` end to end: read the data and the teacher, train, and write the checkpoint
(``X.safetensors``, docs/formats.md, with the witness and full provenance in ``vae_audit.training``) and
the per-epoch monitor ``X.csv`` beside it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .._version import __version__
from ..errors import AuditInputError
from ..sources.arrays import row_ranges
from ..sources.atomic import atomic_write_text
from ..sources.checkpoint import load_checkpoint, save_checkpoint
from ..sources.datasets.dataset import to_unit_float
from ..sources.datasets.options import DataOptions
from ..sources.datasets.registry import open_dataset
from ..sources.hashing import sha256_file
from ..sources.teachers.files import load_teacher
from .config import TrainConfig, resolve_config
from .trainer import CSV_COLUMNS, MONITOR_BATCH, TrainResult, train_model


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def monitor_csv_path(out: Path) -> Path:
    return Path(out).with_suffix(".csv")


@dataclass
class TrainingData:
    """One split's samples and the fixed teacher's probabilities on them, read once, reused by runs."""

    data: str
    split: str
    x: torch.Tensor  # N×… in the stored dtype (uint8 stays uint8)
    p: torch.Tensor  # N×K float64
    teacher_path: Path
    teacher_k: int
    record: dict  # provenance of data and teacher


def load_training_data(
    data: str, split: str | None, teacher_path: Path, reading: DataOptions | None = None
) -> TrainingData:
    """Read the split (with the reading options) and run the teacher on it, checking that the two fit together."""
    teacher_path = Path(teacher_path)
    dataset = open_dataset(data, split, options=reading)
    teacher = load_teacher(teacher_path, False, dataset.sample_shape).eval()
    size = math.prod(dataset.sample_shape)
    if teacher.input_dim is not None and teacher.input_dim != size:
        raise AuditInputError(
            f"the teacher takes inputs of size {teacher.input_dim} but the data samples have size {size}"
        )
    if teacher.num_classes > dataset.num_samples:
        raise AuditInputError(
            f"the teacher has K={teacher.num_classes} classes but {data!r} ({dataset.split}) "
            f"has only {dataset.num_samples} samples"
        )
    x = torch.from_numpy(dataset.read(0, dataset.num_samples))
    with torch.no_grad():
        p = torch.cat(
            [teacher(to_unit_float(x[b:e])).to(torch.float64) for b, e in row_ranges(0, len(x), MONITOR_BATCH)]
        )
    record = {
        "data": {
            "spec": data,
            "split": dataset.split,
            "split_rule": dataset.split_rule,
            "image_size": reading.image_size if reading else None,
            "column": reading.column if reading else None,
            "num_samples": dataset.num_samples,
            "inputs": [{"path": r.path, "sha256": r.sha256} for r in dataset.inputs],
        },
        "teacher": {"path": str(teacher_path), "sha256": sha256_file(teacher_path), "num_classes": teacher.num_classes},
    }
    return TrainingData(data, dataset.split, x, p, teacher_path, teacher.num_classes, record)


def train_and_save(
    cfg: TrainConfig,
    inputs: TrainingData,
    out: Path,
    init_path: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train on ``inputs`` and write ``out`` (.safetensors) and the per-epoch monitor (.csv) beside it."""
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise AuditInputError(f"--out must name a .safetensors file, got {out}")
    init = load_checkpoint(init_path) if init_path is not None else None
    if init is not None and math.prod(init.architecture["input_shape"]) != math.prod(inputs.x.shape[1:]):
        raise AuditInputError(
            f"--init {init_path} takes inputs of shape {init.architecture['input_shape']}, "
            f"the data samples have shape {list(inputs.x.shape[1:])}"
        )
    result = train_model(cfg, inputs.x, inputs.p, init, on_epoch)
    training = {
        **result.config.provenance(),
        "epochs_run": result.epochs_run,
        "stopped_by": result.stopped_by,
        **inputs.record,
        "init": None if init_path is None else {"path": str(init_path), "sha256": sha256_file(init_path)},
        "final": {k: result.history[-1][k] for k in ("margin", "margin_lcb", "certified", "active_units")},
        "tool_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    save_checkpoint(out, result.model, result.architecture, result.witness, training)
    atomic_write_text(monitor_csv_path(out), history_csv(result.history))
    return result


def train_to_file(
    cfg: TrainConfig,
    data: str,
    split: str | None,
    teacher_path: Path,
    out: Path,
    init_path: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    reading: DataOptions | None = None,
) -> TrainResult:
    """What ``audit train`` runs: check the arguments, read data and teacher, train, write."""
    if Path(out).suffix.lower() != ".safetensors":
        raise AuditInputError(f"--out must name a .safetensors file, got {out}")
    resolve_config(cfg, load_checkpoint(init_path) if init_path is not None else None)  # argument errors first
    return train_and_save(cfg, load_training_data(data, split, teacher_path, reading), out, init_path, on_epoch)
