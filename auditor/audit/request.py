"""What the user asked an audit for: :class:`AuditRequest` (the CLI's flags, or a library caller's
arguments), checked on its own before any file is opened, and recorded in the certificate so
that ``audit verify --recompute`` can run it again."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..certificate.numbers import confidence_z
from ..errors import AuditInputError
from ..sources.datasets.options import OPTION_NAMES, DataOptions
from ..sources.models.torch_pickle import CHECKPOINT_SUFFIXES
from .batch_size import parse_batch_size
from .forward import precision_dtype


@dataclass
class AuditRequest:
    model: Path | None = None
    arch: str | None = None
    arch_args: tuple[str, ...] = ()  # --arch-arg name=value, the factory's keyword arguments
    key_prefix: str | None = None  # read only the weights whose names start with it, stripped
    state_key: str | None = None  # the entry of a .pt/.pth/.ckpt file that holds the state dict
    trust_code: bool = False  # allow a model file whose loading runs code (a pythae encoder.pkl)
    latents: Path | None = None
    teacher: Path | None = None
    teacher_probs: Path | None = None
    trust_teacher_code: bool = False
    data: str | None = None
    split: str | None = None
    limit: int | None = None
    image_size: tuple[int, int] | None = None  # reading --data: every image resized to (height, width)
    column: str | None = None  # reading --data: the Parquet/Arrow column of samples
    test_every: int | None = None  # the file split rule's M, for data (and teacher data) without a split
    teacher_data: str | None = None
    view_probs: Path | None = None
    num_classes: int | None = None
    beta: float | None = None
    witness_offset: int | None = None
    witness: Path | None = None  # witness.json from design time, instead of the three fields above
    confidence: float = 0.95
    min_margin: float = 0.0
    batch_size: int | str = 512  # or "auto"
    device: str = "auto"
    precision: str = "fp32"  # encoder/teacher forward: fp32, bf16 or fp16 (certificate arithmetic stays float64)
    model_diagnostics: bool = True  # diagnostics.model: a fixed-size extra pass, beside the certificate


def check_request(req: AuditRequest) -> None:
    """Refuse flags that contradict each other or are out of range, before any file is opened."""
    encoders = [
        flag
        for flag, v in (("--model", req.model and not req.arch), ("--arch", req.arch), ("--latents", req.latents))
        if v
    ]
    if len(encoders) != 1:
        raise AuditInputError(
            "give exactly one of --model, --arch (optionally with --model weights) or --latents"
            + (f" (got {', '.join(encoders)})" if encoders else "")
        )
    if req.latents and req.model:
        raise AuditInputError("--latents cannot be combined with --model")
    _check_weight_flags(req)
    teachers = [flag for flag, v in (("--teacher", req.teacher), ("--teacher-probs", req.teacher_probs)) if v]
    if len(teachers) != 1:
        raise AuditInputError(
            "give exactly one of --teacher or --teacher-probs" + (f" (got {', '.join(teachers)})" if teachers else "")
        )
    if req.teacher_data and not req.teacher:
        raise AuditInputError("--teacher-data needs --teacher (the teacher must run on both views)")
    if req.teacher_data and req.view_probs:
        raise AuditInputError("give --teacher-data or --view-probs for the view gap, not both")
    witness_flags = [
        flag
        for flag, v in (
            ("--num-classes", req.num_classes),
            ("--beta", req.beta),
            ("--witness-offset", req.witness_offset),
        )
        if v is not None
    ]
    if req.witness is not None and witness_flags:
        raise AuditInputError(f"--witness {req.witness} fixes the witness: drop {', '.join(witness_flags)}")
    parse_batch_size(req.batch_size)
    precision_dtype(req.precision)
    if req.limit is not None and req.limit < 1:
        raise AuditInputError(f"--limit must be >= 1, got {req.limit}")
    confidence_z(req.confidence)
    reading = data_options(req)
    if req.data is None and reading.given():
        raise AuditInputError(f"{', '.join(OPTION_NAMES[name] for name in reading.given())} needs --data")
    if not math.isfinite(req.min_margin):
        raise AuditInputError(f"--min-margin must be a finite number, got {req.min_margin}")


def _check_weight_flags(req: AuditRequest) -> None:
    """--arch-arg, --key-prefix and --state-key are read only with --arch (and its --model weights)."""
    if req.arch_args and not req.arch:
        raise AuditInputError("--arch-arg needs --arch (it is a keyword argument of the factory)")
    for flag, value in (("--key-prefix", req.key_prefix), ("--state-key", req.state_key)):
        if value is not None and not (req.arch and req.model):
            raise AuditInputError(f"{flag} needs --arch and --model (it selects the weights loaded into the module)")
    if req.state_key is not None and Path(str(req.model)).suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise AuditInputError(f"--state-key applies to {', '.join(CHECKPOINT_SUFFIXES)} files only")


def data_options(req: AuditRequest) -> DataOptions:
    """How to read ``--data`` (checked here: a bad value is refused before any file is opened)."""
    return DataOptions(image_size=req.image_size, column=req.column, test_every=req.test_every)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise AuditInputError("--device cuda was asked for, but no CUDA device is available")
        return torch.device("cuda")
    raise AuditInputError(f"unknown --device {name!r} (use auto, cpu or cuda)")


def request_record(req: AuditRequest) -> dict:
    """The request as JSON data (paths as strings), so that `audit verify --recompute` can re-run it."""
    return {
        f.name: (str(value) if isinstance(value, Path) else value)
        for f in fields(req)
        for value in [getattr(req, f.name)]
    }
