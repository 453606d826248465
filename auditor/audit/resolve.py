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
from ..sources.datasets.options import DataOptions
from ..sources.datasets.registry import open_dataset
from ..sources.hashing import InputRecord, file_record, sha256_now
from ..sources.models.encode import EncodeRecord, read_means
from ..sources.models.interface import Encoder, FixedWitness
from ..sources.models.registry import model_source_for
from ..sources.teachers.interface import Teacher
from ..sources.teachers.probabilities import open_probabilities
from ..sources.teachers.registry import teacher_source_for
from ..sources.witness_file import WitnessSettings, load_witness
from .plan import PassPlan
from .request import AuditRequest, data_options

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
            "split_rule": data.split_rule,
            "sample_shape": list(data.sample_shape),
            "dtype": str(data.dtype),
        }

    designed, witness_inputs = _open_witness_file(req)
    model_source = model_source_for(req)
    if model_source.needs_data and data is None:
        raise AuditInputError("the encoder needs input data: give --data")
    with loading:
        encoder = model_source.open(req)
        if encoder.module is not None:
            encoder.module.to(device)
    context["model"] = encoder.record
    latent_dim, encode_record = _latent_dim(encoder, data, device)
    if encode_record is not None:
        context["model"] = {**encoder.record, "encode": encode_record.as_dict()}

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
    _check_designed_teacher(req, designed)

    view = _open_view(req, teacher)
    witness, witness_source = _witness(req, designed, encoder.witness, latent_dim, teacher.num_classes)
    rows: dict[str, ArrayReader] = {"x": data} if data is not None else {}
    rows.update(encoder.rows)
    rows.update(teacher.rows)
    rows.update(view.rows)
    plan = PassPlan(
        rows,
        encoder=encoder.module,
        teacher=teacher.module,
        with_view=bool(view.rows),
        input_shape=encoder.input_shape,
        encode_record=encode_record,
    )
    if plan.num_samples == 0:
        raise AuditInputError("the audit set is empty: no samples to audit")
    inputs = [
        *(data.inputs if data is not None else []),
        *encoder.inputs,
        *teacher.inputs,
        *view.inputs,
        *witness_inputs,
    ]
    return Sources(plan, witness, witness_source, inputs, context, view.reason_absent, data, loading.seconds)


def _open_data(req: AuditRequest) -> Dataset | None:
    if req.data is not None:
        return open_dataset(req.data, req.split, req.limit, role="data", options=data_options(req))
    if req.split not in (None, "all"):
        raise AuditInputError("--split needs --data")
    return None


def _latent_dim(encoder: Encoder, data: Dataset | None, device: torch.device) -> tuple[int, EncodeRecord | None]:
    """d, and how μ is read from the encoder's output (None for precomputed latents)."""
    if encoder.module is None:
        return int(encoder.rows["mu"].shape[1]), None
    assert data is not None  # model sources that run an encoder need data (checked before opening)
    if encoder.input_shape is not None and math.prod(encoder.input_shape) != math.prod(data.sample_shape):
        raise AuditInputError(
            f"the model takes inputs of shape {list(encoder.input_shape)} but the data samples have shape {list(data.sample_shape)}"
        )
    return _probe_latent_dim(encoder.module, data, encoder.input_shape, device)


@torch.no_grad()
def _probe_latent_dim(encoder: nn.Module, dataset: Dataset, input_shape, device) -> tuple[int, EncodeRecord]:
    if dataset.num_samples == 0:
        raise AuditInputError("the audit set is empty: no samples to audit")
    x = to_unit_float(torch.from_numpy(dataset.read(0, 1).copy()).to(device))
    if input_shape is not None:
        x = x.reshape(1, *input_shape)
    try:
        means = read_means(encoder, x)
    except RuntimeError as exc:
        raise AuditInputError(
            f"the encoder cannot run on the data's samples of shape {list(dataset.sample_shape)} ({str(exc).splitlines()[0][:120]})"
        ) from None
    return int(means.mu.shape[1]), means.record


def _check_teacher_input(teacher: nn.Module, sample_shape: tuple[int, ...], what: str) -> None:
    size = math.prod(sample_shape)
    if teacher.input_dim is not None and teacher.input_dim != size:
        raise AuditInputError(f"the teacher takes inputs of size {teacher.input_dim} but {what} have size {size}")


def _open_view(req: AuditRequest, teacher: Teacher) -> View:
    if req.teacher_data:
        # Same split rule as --data, so that row i of the two views is the same sample; the
        # teacher's view is read as stored (its own image size, its first usable column).
        reading = DataOptions(test_every=req.test_every)
        view = open_dataset(req.teacher_data, req.split, req.limit, role="teacher-data", options=reading)
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


def _open_witness_file(req: AuditRequest) -> tuple[WitnessSettings | None, list[InputRecord]]:
    """``--witness witness.json``, read and checked before any model is loaded (an input: hashed, listed)."""
    if req.witness is None:
        return None, []
    return load_witness(req.witness), [file_record("witness", req.witness)]


def _check_designed_teacher(req: AuditRequest, designed: WitnessSettings | None) -> None:
    """A witness file names the teacher it was designed with; auditing with another teacher file is refused."""
    if designed is None or designed.teacher_sha256 is None or req.teacher is None:
        return  # precomputed --teacher-probs have no teacher file to compare
    actual = sha256_now(req.teacher)
    if actual != designed.teacher_sha256:
        raise AuditInputError(
            f"--witness {req.witness} was designed with the teacher of sha256 {designed.teacher_sha256[:12]}…, "
            f"but --teacher {req.teacher} has sha256 {actual[:12]}…"
        )


def _witness(
    req: AuditRequest, designed: WitnessSettings | None, fixed: FixedWitness | None, latent_dim: int, teacher_k: int
) -> tuple[WitnessSpec, str]:
    """The witness fixed by the model's metadata, else by the witness file, else by the flags.

    A witness file or a flag that contradicts the model's metadata is an error, as is a witness file
    designed for another latent dimension; the witness must match the teacher's K.
    """
    if designed is not None:
        if designed.latent_dim is not None and designed.latent_dim != latent_dim:
            raise AuditInputError(
                f"--witness {req.witness} was designed for latent dimension d={designed.latent_dim}, "
                f"the model's latent means have d={latent_dim}"
            )
        given: dict[str, float | None] = {
            "num_classes": designed.num_classes,
            "beta": designed.beta,
            "offset": designed.offset,
        }
        named = {key: f"--witness {req.witness} ({key}={value})" for key, value in given.items()}
        source, fix = f"witness file {req.witness}", "use a witness file that agrees, or none"
    else:
        given = {"num_classes": req.num_classes, "beta": req.beta, "offset": req.witness_offset}
        flags = {"num_classes": "--num-classes", "beta": "--beta", "offset": "--witness-offset"}
        named = {key: f"{flags[key]} {value}" for key, value in given.items()}
        source, fix = "command-line flags", "drop the flag"
    if fixed is not None:
        for key, value in given.items():
            if value is not None and value != fixed.spec[key]:
                raise AuditInputError(
                    f"{named[key]} contradicts the witness fixed in {fixed.where} ({key}={fixed.spec[key]}); {fix}"
                )
        spec = WitnessSpec(fixed.spec["num_classes"], latent_dim, fixed.spec["beta"], fixed.spec["offset"])
        source = f"metadata of {fixed.where}" + (f", matching witness file {req.witness}" if designed else "")
    elif designed is not None:
        spec = WitnessSpec(designed.num_classes, latent_dim, designed.beta, designed.offset)
    else:
        if req.beta is None:
            raise AuditInputError(
                "the witness needs --witness FILE, or --beta (and optionally --num-classes, --witness-offset), "
                "when the model's metadata does not fix it"
            )
        K = req.num_classes if req.num_classes is not None else teacher_k
        spec = WitnessSpec(K, latent_dim, float(req.beta), req.witness_offset or 0)
    if spec.num_classes != teacher_k:
        raise AuditInputError(f"the witness has K={spec.num_classes} classes but the teacher gives K={teacher_k}")
    return spec, source
