"""``audit train`` end to end: read the data and the teacher, train, and write the run's files.

Beside ``--out X.safetensors`` (docs/formats.md, with the witness and full provenance in
``vae_audit.training``) a run keeps the per-epoch monitor ``X.csv`` (rewritten after every epoch)
and, while it is unfinished, ``X.resume.pt`` (:mod:`auditor.training.resume`), which ``--resume``
continues from. Under torchrun every rank trains and only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .._version import __version__
from ..audit.distributed import Ranks
from ..errors import AuditInputError
from ..sources.arrays import row_ranges
from ..sources.atomic import atomic_write_text
from ..sources.checkpoint import load_checkpoint, save_checkpoint
from ..sources.datasets.dataset import Dataset, to_unit_float
from ..sources.datasets.options import DataOptions
from ..sources.datasets.registry import open_dataset
from ..sources.hashing import InputRecord, sha256_file
from ..sources.teachers.files import load_teacher
from .config import TrainConfig, resolve_config
from .history import history_csv, read_history_csv
from .methods.registry import get_method
from .resume import ResumePoint, load_resume, resume_path, save_resume
from .trainer import MONITOR_BATCH, TrainResult, train_model

# A data set of more files than this (an image folder) is recorded in the provenance by its count
# and the sha256 of its `sha256sum`-style listing, not file by file.
MAX_LISTED_INPUTS = 64


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


def inputs_record(records: Sequence[InputRecord]) -> dict:
    """The data's files for the provenance: listed, or (many files) counted and digested.

    The digest is the sha256 of the lines ``<sha256>  <path>`` (the format ``sha256sum`` writes and
    ``sha256sum -c`` checks), one per file in the order read.
    """
    listed = [{"path": r.path, "sha256": r.sha256} for r in records]
    if len(listed) <= MAX_LISTED_INPUTS:
        return {"inputs": listed}
    listing = "".join(f"{entry['sha256']}  {entry['path']}\n" for entry in listed)
    return {"num_inputs": len(listed), "inputs_sha256sum_sha256": hashlib.sha256(listing.encode()).hexdigest()}


def teacher_probabilities_on(teacher: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """T(·|x) in float64 on samples held in memory, batch by batch, each fed as the audit feeds it."""
    with torch.no_grad():
        return torch.cat(
            [teacher(to_unit_float(x[b:e])).to(torch.float64) for b, e in row_ranges(0, len(x), batch_size)]
        )


def read_split(data: str, split: str | None, reading: DataOptions | None = None) -> tuple[Dataset, torch.Tensor]:
    """The split opened (with the reading options) and read whole, in its stored dtype (the trainer
    holds it in memory)."""
    dataset = open_dataset(data, split, options=reading)
    return dataset, torch.from_numpy(dataset.read(0, dataset.num_samples))


def load_training_data(
    data: str,
    split: str | None,
    teacher_path: Path,
    reading: DataOptions | None = None,
    samples: tuple[Dataset, torch.Tensor] | None = None,
) -> TrainingData:
    """Read the split (with the reading options; or take ``samples`` read before) and run the
    teacher on it, checking that the two fit together."""
    teacher_path = Path(teacher_path)
    dataset, x = read_split(data, split, reading) if samples is None else samples
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
    p = teacher_probabilities_on(teacher, x, MONITOR_BATCH)
    record = {
        "data": {
            "spec": data,
            "split": dataset.split,
            "split_rule": dataset.split_rule,
            "image_size": reading.image_size if reading else None,
            "column": reading.column if reading else None,
            "num_samples": dataset.num_samples,
            **inputs_record(dataset.inputs),
        },
        "teacher": {"path": str(teacher_path), "sha256": sha256_file(teacher_path), "num_classes": teacher.num_classes},
    }
    return TrainingData(data, dataset.split, x, p, teacher_path, teacher.num_classes, record)


def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise AuditInputError(f"--out must name a .safetensors file, got {out}")
    return out


def train_and_save(
    cfg: TrainConfig,
    inputs: TrainingData,
    out: Path,
    init_path: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    *,
    resume: bool = False,
    ranks: Ranks = Ranks(),
    device: torch.device | None = None,
) -> TrainResult:
    """Train on ``inputs`` and write ``out`` (.safetensors) and the per-epoch monitor (.csv) beside it.

    After every epoch but the last, ``X.resume.pt`` records where the run stands; with ``resume``
    an existing one is continued, a run that already finished into ``out`` is kept as it is, and
    otherwise the run starts from the beginning. Only rank 0 writes.
    """
    out = _check_out(out)
    init = load_checkpoint(init_path) if init_path is not None else None
    if init is not None and math.prod(init.architecture["input_shape"]) != math.prod(inputs.x.shape[1:]):
        raise AuditInputError(
            f"--init {init_path} takes inputs of shape {init.architecture['input_shape']}, "
            f"the data samples have shape {list(inputs.x.shape[1:])}"
        )
    resolved = resolve_config(cfg, init)
    init_record = None if init_path is None else {"path": str(init_path), "sha256": sha256_file(init_path)}
    # Everything that decides the run's bytes: a resume file from another run is refused.
    fingerprint = {"config": resolved.provenance(), **inputs.record, "init": init_record}
    resume_file = resume_path(out)
    if resume and not resume_file.exists():
        finished = finished_run(out, fingerprint, resolved)
        if finished is not None:
            return finished
    total_epochs = get_method(str(resolved.method)).prefit_epochs(resolved) + resolved.epochs
    point = load_resume(resume_file, fingerprint, total_epochs) if resume and resume_file.is_file() else None

    def checkpoint(progress: ResumePoint) -> None:
        if ranks.is_main:
            save_resume(resume_file, progress, fingerprint)
            atomic_write_text(monitor_csv_path(out), history_csv(progress.history))

    result = train_model(
        cfg, inputs.x, inputs.p, init, on_epoch, ranks=ranks, device=device, resume=point, checkpoint=checkpoint
    )
    training = {
        **result.config.provenance(),
        "epochs_run": result.epochs_run,
        "stopped_by": result.stopped_by,
        "world_size": ranks.world_size,
        **inputs.record,
        "init": init_record,
        "final": {k: result.history[-1][k] for k in ("margin", "margin_lcb", "certified", "active_units")},
        "tool_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    if ranks.is_main:
        save_checkpoint(out, result.model, result.architecture, result.witness, training)
        atomic_write_text(monitor_csv_path(out), history_csv(result.history))
        resume_file.unlink(missing_ok=True)
    return result


def finished_run(out: Path, fingerprint: dict, cfg: TrainConfig) -> TrainResult | None:
    """The run already written to ``out`` when its provenance is this run's (``--resume`` then has
    nothing left to do), read back; None when there is none, or it is another run's."""
    if not out.is_file():
        return None
    checkpoint = load_checkpoint(out)
    recorded = checkpoint.training or {}
    as_recorded = {
        "config": {key: recorded.get(key) for key in fingerprint["config"]},
        **{key: recorded.get(key) for key in fingerprint if key != "config"},
    }
    history = read_history_csv(monitor_csv_path(out))
    if json.loads(json.dumps(as_recorded)) != json.loads(json.dumps(fingerprint)) or history is None:
        return None
    model, arch, witness = checkpoint.model, checkpoint.architecture, checkpoint.witness
    return TrainResult(model, arch, witness, cfg, history, recorded["epochs_run"], recorded["stopped_by"])


def train_to_file(
    cfg: TrainConfig,
    data: str,
    split: str | None,
    teacher_path: Path,
    out: Path,
    init_path: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    reading: DataOptions | None = None,
    *,
    resume: bool = False,
    ranks: Ranks = Ranks(),
    device: torch.device | None = None,
) -> TrainResult:
    """What ``audit train`` runs: check the arguments, read data and teacher, train, write."""
    _check_out(out)
    resolve_config(cfg, load_checkpoint(init_path) if init_path is not None else None)  # argument errors first
    inputs = load_training_data(data, split, teacher_path, reading)
    return train_and_save(cfg, inputs, out, init_path, on_epoch, resume=resume, ranks=ranks, device=device)
