"""From a request to the opened inputs of one audit, checked against each other.

Each input comes through its seam — data sets (:mod:`auditor.sources.datasets`), model sources
(:mod:`auditor.sources.models`), teacher sources (:mod:`auditor.sources.teachers`) — and this
module only checks that the pieces fit: one encoder source and one teacher source, matching K,
d, input sizes and sample counts, and the witness, all before any sample is read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..certificate.witness import WitnessSpec
from ..errors import AuditInputError
from ..sources.arrays import ArrayReader, first_rows
from ..sources.datasets.dataset import Dataset, to_unit_float
from ..sources.datasets.registry import open_dataset
from ..sources.hashing import InputRecord, file_record
from ..sources.models.encode import encode_means
from ..sources.models.interface import Encoder, FixedWitness
from ..sources.models.registry import model_source_for
from ..sources.teachers.interface import Teacher
from ..sources.teachers.probabilities import open_probabilities
from ..sources.teachers.registry import teacher_source_for
from .plan import PassPlan
from .request import AuditRequest

PROBE_ROWS = 8  # rows of the probe batch that fixes d and checks that encode(x) is the mean
NO_VIEW_REASON = "no second view was given (--teacher-data or --view-probs): the teacher saw the encoder's own inputs"


class Stopwatch:
    """Wall seconds spent inside ``with stopwatch:`` blocks, summed."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._start


@dataclass
class View:
    """The teacher's second view, when one was given: its rows (``x_teacher`` or ``view_probs``)."""

    rows: dict[str, ArrayReader] = field(default_factory=dict)
    inputs: list[InputRecord] = field(default_factory=list)
    reason_absent: str | None = None


@dataclass
class Sources:
    """The inputs of one audit, opened and checked against each other."""

    plan: PassPlan
    witness: WitnessSpec
    witness_source: str
    inputs: list[InputRecord]
    context: dict  # the certificate's "data", "model" and "teacher" entries
    view_gap_reason: str | None
    data: Dataset | None
    # Wall seconds spent loading the encoder and the teacher (files read, modules built, moved to
    # the device). Not in the report, which must not change between reruns; benchmarks use it.
    load_seconds: float


def resolve_sources(req: AuditRequest, device: torch.device) -> Sources:
    loading = Stopwatch()
    context: dict = {}
    data = _open_data(req)
    if data is not None:
        context["data"] = {
            "spec": req.data,
            "split": data.split,
            "limit": req.limit,
            "sample_shape": list(data.sample_shape),
            "dtype": str(data.dtype),
        }

    model_source = model_source_for(req)
    if model_source.needs_data and data is None:
        raise AuditInputError("the encoder needs input data: give --data")
    with loading:
        encoder = model_source.open(req)
        if encoder.module is not None:
            encoder.module.to(device).eval()  # no dropout, batch statistics frozen: μ(x) is a function of x
    context["model"] = encoder.record
    latent_dim = _latent_dim(encoder, data, device)

    teacher_source = teacher_source_for(req)
    if teacher_source.needs_data and data is None:
        raise AuditInputError("the teacher needs input data: give --data (or precomputed --teacher-probs)")
    with loading:
        teacher = teacher_source.open(req, data.sample_shape if data is not None else None)
        if teacher.module is not None:
            teacher.module.to(device)
    if teacher.module is not None and data is not None:
        _check_teacher_input(teacher.module, data.sample_shape, "the data samples")
    context["teacher"] = teacher.record

    view = _open_view(req, teacher)
    witness, witness_source = _witness(req, encoder.witness, latent_dim, teacher.num_classes)
    rows: dict[str, ArrayReader] = {"x": data} if data is not None else {}
    rows.update(encoder.rows)
    rows.update(teacher.rows)
    rows.update(view.rows)
    plan = PassPlan(
        rows, encoder=encoder.module, teacher=teacher.module, with_view=bool(view.rows), input_shape=encoder.input_shape
    )
    if plan.num_samples == 0:
        raise AuditInputError("the audit set is empty: no samples to audit")
    inputs = [*(data.inputs if data is not None else []), *encoder.inputs, *teacher.inputs, *view.inputs]
    return Sources(plan, witness, witness_source, inputs, context, view.reason_absent, data, loading.seconds)


def _open_data(req: AuditRequest) -> Dataset | None:
    if req.data is not None:
        return open_dataset(req.data, req.split, req.limit, role="data")
    if req.split not in (None, "all"):
        raise AuditInputError("--split needs --data")
    return None


def _latent_dim(encoder: Encoder, data: Dataset | None, device: torch.device) -> int:
    if encoder.module is None:
        return int(encoder.rows["mu"].shape[1])
    assert data is not None  # model sources that run an encoder need data (checked before opening)
    if encoder.input_shape is not None and math.prod(encoder.input_shape) != math.prod(data.sample_shape):
        raise AuditInputError(
            f"the model takes inputs of shape {list(encoder.input_shape)} but the data samples have shape {list(data.sample_shape)}"
        )
    return _probe_latent_dim(encoder.module, data, encoder.input_shape, device)


@torch.no_grad()
def _probe_latent_dim(encoder: nn.Module, dataset: Dataset, input_shape, device) -> int:
    """d, from encoding the first rows twice; an encoder whose two answers differ is refused.

    The certificate is about the posterior mean μ(x). An encode(x) that returns a sample
    z ~ q(z|x) would be audited as a different, noisy function at every batch.
    """
    if dataset.num_samples == 0:
        raise AuditInputError("the audit set is empty: no samples to audit")
    x = to_unit_float(torch.from_numpy(dataset.read(0, PROBE_ROWS).copy()).to(device))
    if input_shape is not None:
        x = x.reshape(len(x), *input_shape)
    try:
        mu, _ = encode_means(encoder, x)
        again, _ = encode_means(encoder, x)
    except RuntimeError as exc:
        raise AuditInputError(
            f"the encoder cannot run on the data's samples of shape {list(dataset.sample_shape)} ({str(exc).splitlines()[0][:120]})"
        ) from None
    if not isinstance(mu, torch.Tensor) or mu.ndim != 2 or len(mu) != len(x):
        shape = tuple(mu.shape) if isinstance(mu, torch.Tensor) else type(mu).__name__
        raise AuditInputError(f"encode(x) must return means of shape (batch, d), got {shape} for {len(x)} inputs")
    latent_dim = int(mu.shape[1])
    finite = torch.isfinite(mu) & torch.isfinite(again)  # NaN and inf are the state's to report
    first, second = mu[finite].double(), again[finite].double()
    difference = _largest(first - second)
    if difference > 1e-4 * (1.0 + _largest(first)):
        raise AuditInputError(
            f"encode(x) gave different means for the same {len(x)} inputs in eval mode (by up to {difference:.3g}): "
            "it must return the posterior mean μ(x), or (mu, logvar), not a sample z ~ q(z|x)"
        )
    return latent_dim


def _largest(values: torch.Tensor) -> float:
    return float(values.abs().max()) if values.numel() else 0.0


def _check_teacher_input(teacher: nn.Module, sample_shape: tuple[int, ...], what: str) -> None:
    size = math.prod(sample_shape)
    if teacher.input_dim is not None and teacher.input_dim != size:
        raise AuditInputError(f"the teacher takes inputs of size {teacher.input_dim} but {what} have size {size}")


def _open_view(req: AuditRequest, teacher: Teacher) -> View:
    if req.teacher_data:
        view = open_dataset(req.teacher_data, req.split, req.limit, role="teacher-data")
        assert teacher.module is not None  # --teacher-data needs --teacher (checked with the request)
        _check_teacher_input(teacher.module, view.sample_shape, "the --teacher-data samples")
        return View({"x_teacher": view}, list(view.inputs))
    if req.view_probs:
        probs = open_probabilities(req.view_probs, "probs")
        if int(probs.shape[1]) != teacher.num_classes:
            raise AuditInputError(
                f"{req.view_probs}: has K={probs.shape[1]} columns, the teacher gives K={teacher.num_classes}"
            )
        return View({"view_probs": first_rows(probs, req.limit)}, [file_record("view-probs", req.view_probs)])
    return View(reason_absent=NO_VIEW_REASON)


def _witness(req: AuditRequest, fixed: FixedWitness | None, latent_dim: int, teacher_k: int) -> tuple[WitnessSpec, str]:
    """The witness fixed by the model's metadata, or given by the flags; it must match the teacher's K."""
    flags = {"num_classes": req.num_classes, "beta": req.beta, "offset": req.witness_offset}
    if fixed is not None:
        for key, flag in (("num_classes", "--num-classes"), ("beta", "--beta"), ("offset", "--witness-offset")):
            if flags[key] is not None and flags[key] != fixed.spec[key]:
                raise AuditInputError(
                    f"{flag} {flags[key]} contradicts the witness fixed in {fixed.where} ({key}={fixed.spec[key]}); drop the flag"
                )
        spec = WitnessSpec(fixed.spec["num_classes"], latent_dim, fixed.spec["beta"], fixed.spec["offset"])
        source = f"metadata of {fixed.where}"
    else:
        if req.beta is None:
            raise AuditInputError(
                "the witness needs --beta (and optionally --num-classes, --witness-offset) when the model's metadata does not fix it"
            )
        K = req.num_classes if req.num_classes is not None else teacher_k
        spec = WitnessSpec(K, latent_dim, float(req.beta), req.witness_offset or 0)
        source = "command-line flags"
    if spec.num_classes != teacher_k:
        raise AuditInputError(f"the witness has K={spec.num_classes} classes but the teacher gives K={teacher_k}")
    return spec, source
