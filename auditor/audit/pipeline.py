"""One audit from the user's inputs to a certificate dict: resolve, check, run the pass, decide.

:class:`AuditRequest` holds what the user asked for (the CLI's flags, or a library caller's
arguments); :func:`run_audit` checks that the pieces fit together — one encoder source, one
teacher source, matching K, d, input sizes and sample counts — before any sample is read.
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from ..certificate.state import CertificateNumbers, CertificateState, Verdict, confidence_z, decide
from ..sources.checkpoint import KEY_WITNESS, load_checkpoint, load_state_into, witness_metadata
from ..sources.datasets.dataset import Dataset, InputRecord, open_dataset, to_unit_float
from .diagnostics import model_diagnostics
from ..errors import AuditInputError
from .batch_size import auto_batch_size, parse_batch_size
from .distributed import Ranks, combine_across_ranks, device_for_rank, process_group, ranks_from_env, shard_range
from .stream import PassPlan, encode_means, precision_dtype, raise_for_nonfinite_inputs, stream_pass
from ..sources.hashing import hashing_in_background, resolve_digest, sha256_file
from ..sources.arrays import FirstRows, open_array, safetensors_metadata
from ..teachers.pca_gmm import load_teacher, open_probabilities
from ..certificate.witness import WitnessSpec


@dataclass
class AuditRequest:
    model: Path | None = None
    arch: str | None = None
    latents: Path | None = None
    teacher: Path | None = None
    teacher_probs: Path | None = None
    trust_teacher_code: bool = False
    data: str | None = None
    split: str | None = None
    limit: int | None = None
    teacher_data: str | None = None
    view_probs: Path | None = None
    num_classes: int | None = None
    beta: float | None = None
    witness_offset: int | None = None
    confidence: float = 0.95
    min_margin: float = 0.0
    batch_size: int | str = 512  # or "auto"
    device: str = "auto"
    precision: str = "fp32"  # encoder/teacher forward: fp32, bf16 or fp16 (certificate arithmetic stays float64)
    model_diagnostics: bool = True  # diagnostics.model: a fixed-size extra pass, beside the certificate


@dataclass
class AuditResult:
    numbers: CertificateNumbers
    verdict: Verdict
    witness: WitnessSpec
    witness_source: str
    inputs: list[InputRecord]
    context: dict  # model, teacher, data and settings, as written into the report
    view_gap_reason: str | None
    # Wall seconds spent loading the encoder and the teacher (files read, modules built, moved to
    # the device). Not in the report, which must not change between reruns; benchmarks use it.
    model_load_seconds: float = 0.0


class _Stopwatch:
    """Wall seconds spent inside ``with stopwatch:`` blocks, summed."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start


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


def _file_record(role: str, path: Path) -> InputRecord:
    return InputRecord(role=role, path=str(path), sha256=sha256_file(path))


def _import_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AuditInputError(f"--arch must look like module:factory, got {spec!r}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # so that a user's local module is found
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise AuditInputError(f"--arch {spec}: cannot import module {module_name!r} ({exc})") from None
    except AttributeError:
        raise AuditInputError(f"--arch {spec}: module {module_name!r} has no {attr!r}") from None
    model = factory()
    if not isinstance(model, nn.Module) or not callable(getattr(model, "encode", None)):
        raise AuditInputError(f"--arch {spec}: the factory must return an nn.Module with an encode(x) method")
    return model


def _check_choice(req: AuditRequest) -> None:
    encoders = [flag for flag, v in (("--model", req.model and not req.arch), ("--arch", req.arch), ("--latents", req.latents)) if v]
    if len(encoders) != 1:
        raise AuditInputError("give exactly one of --model, --arch (optionally with --model weights) or --latents"
                              + (f" (got {', '.join(encoders)})" if encoders else ""))
    if req.latents and req.model:
        raise AuditInputError("--latents cannot be combined with --model")
    teachers = [flag for flag, v in (("--teacher", req.teacher), ("--teacher-probs", req.teacher_probs)) if v]
    if len(teachers) != 1:
        raise AuditInputError("give exactly one of --teacher or --teacher-probs" + (f" (got {', '.join(teachers)})" if teachers else ""))
    if req.teacher_data and not req.teacher:
        raise AuditInputError("--teacher-data needs --teacher (the teacher must run on both views)")
    if req.teacher_data and req.view_probs:
        raise AuditInputError("give --teacher-data or --view-probs for the view gap, not both")
    parse_batch_size(req.batch_size)
    precision_dtype(req.precision)
    if req.limit is not None and req.limit < 1:
        raise AuditInputError(f"--limit must be >= 1, got {req.limit}")
    confidence_z(req.confidence)
    if not math.isfinite(req.min_margin):
        raise AuditInputError(f"--min-margin must be a finite number, got {req.min_margin}")


def _limited(reader, limit: int | None):
    """The first ``limit`` rows of a file-backed source (--limit applies to every input alike)."""
    if limit is None or reader.shape[0] <= limit:
        return reader
    return FirstRows(reader, limit)


def _check_teacher_input(teacher: nn.Module, sample_shape: tuple[int, ...], what: str) -> None:
    size = math.prod(sample_shape)
    if teacher.input_dim is not None and teacher.input_dim != size:
        raise AuditInputError(f"the teacher takes inputs of size {teacher.input_dim} but {what} have size {size}")


def _witness_from_flags(req: AuditRequest, fixed: dict | None, fixed_where: str, latent_dim: int, teacher_k: int) -> tuple[WitnessSpec, str]:
    flags = {"num_classes": req.num_classes, "beta": req.beta, "offset": req.witness_offset}
    if fixed is not None:
        for key, flag in (("num_classes", "--num-classes"), ("beta", "--beta"), ("offset", "--witness-offset")):
            if flags[key] is not None and flags[key] != fixed[key]:
                raise AuditInputError(f"{flag} {flags[key]} contradicts the witness fixed in {fixed_where} ({key}={fixed[key]}); drop the flag")
        spec = WitnessSpec(fixed["num_classes"], latent_dim, fixed["beta"], fixed["offset"])
        source = f"metadata of {fixed_where}"
    else:
        if req.beta is None:
            raise AuditInputError("the witness needs --beta (and optionally --num-classes, --witness-offset) when the model's metadata does not fix it")
        K = req.num_classes if req.num_classes is not None else teacher_k
        spec = WitnessSpec(K, latent_dim, float(req.beta), req.witness_offset or 0)
        source = "command-line flags"
    if spec.num_classes != teacher_k:
        raise AuditInputError(f"the witness has K={spec.num_classes} classes but the teacher gives K={teacher_k}")
    return spec, source


def run_audit(req: AuditRequest, progress=None) -> AuditResult:
    """The audit of ``req``; under torchrun, this rank's shard combined with every other rank's.

    ``progress`` is called with the row count of every batch done (and, when it has a
    ``begin`` method, with this rank's total rows first).
    """
    _check_choice(req)
    ranks = ranks_from_env()
    device = device_for_rank(resolve_device(req.device), ranks)
    with process_group(device, ranks) as ranks, hashing_in_background():
        return _run_audit(req, device, ranks, progress)


def _run_audit(req: AuditRequest, device: torch.device, ranks: Ranks, progress) -> AuditResult:
    inputs: list[InputRecord] = []
    sources = {}
    context: dict = {}
    loading = _Stopwatch()

    dataset: Dataset | None = None
    if req.data is not None:
        dataset = open_dataset(req.data, req.split, req.limit, role="data")
        inputs += dataset.inputs
        sources["x"] = dataset
        context["data"] = {"spec": req.data, "split": dataset.split, "limit": req.limit,
                           "sample_shape": list(dataset.sample_shape), "dtype": str(dataset.dtype)}
    elif req.split not in (None, "all"):
        raise AuditInputError("--split needs --data")

    # ---- encoder side
    encoder, input_shape, fixed_witness, fixed_where = None, None, None, ""
    if req.latents:
        mu = open_array(req.latents, "mu")
        if len(mu.shape) != 2:
            raise AuditInputError(f"{req.latents}: 'mu' must be an N×d array, found shape {mu.shape}")
        inputs.append(_file_record("latents", req.latents))
        sources["mu"] = _limited(mu, req.limit)
        logvar = open_array(req.latents, "logvar", required=False)
        if logvar is not None:
            if tuple(logvar.shape) != tuple(mu.shape):
                raise AuditInputError(f"{req.latents}: 'logvar' has shape {logvar.shape}, 'mu' has {mu.shape}")
            sources["logvar"] = _limited(logvar, req.limit)
        latent_dim = int(mu.shape[1])
        context["model"] = {"source": "latents", "path": str(req.latents)}
    else:
        if dataset is None:
            raise AuditInputError("the encoder needs input data: give --data")
        if req.arch:
            with loading:
                encoder = _import_factory(req.arch)
            if req.model:
                if Path(req.model).suffix.lower() != ".safetensors":
                    raise AuditInputError(f"{req.model}: weights are read from .safetensors files only")
                from safetensors.torch import load_file

                meta = safetensors_metadata(req.model)
                with loading:
                    load_state_into(encoder, load_file(str(req.model)), Path(req.model))
                inputs.append(_file_record("model", Path(req.model)))
                if KEY_WITNESS in meta:
                    fixed_witness, fixed_where = witness_metadata(meta, Path(req.model)), str(req.model)
            encoder.eval()
            context["model"] = {"source": "arch", "factory": req.arch, "weights": str(req.model) if req.model else None}
        else:
            with loading:
                ckpt = load_checkpoint(req.model)
            encoder = ckpt.model
            inputs.append(_file_record("model", Path(req.model)))
            fixed_witness, fixed_where = ckpt.witness, str(req.model)
            input_shape = tuple(ckpt.architecture["input_shape"])
            if math.prod(input_shape) != math.prod(dataset.sample_shape):
                raise AuditInputError(
                    f"the model takes inputs of shape {list(input_shape)} but the data samples have shape {list(dataset.sample_shape)}"
                )
            context["model"] = {"source": "checkpoint", "path": str(req.model),
                                "architecture": ckpt.architecture, "training": ckpt.training}
        with loading:
            encoder.to(device)
        latent_dim = _probe_latent_dim(encoder, dataset, input_shape, device)

    # ---- teacher side
    teacher = None
    if req.teacher_probs:
        probs = open_probabilities(req.teacher_probs, "probs")
        inputs.append(_file_record("teacher-probs", req.teacher_probs))
        sources["probs"] = _limited(probs, req.limit)
        teacher_k = int(probs.shape[1])
        context["teacher"] = {"kind": "probabilities", "path": str(req.teacher_probs)}
    else:
        if dataset is None:
            raise AuditInputError("the teacher needs input data: give --data (or precomputed --teacher-probs)")
        with loading:
            teacher = load_teacher(req.teacher, req.trust_teacher_code, dataset.sample_shape).to(device).eval()
        inputs.append(_file_record("teacher", req.teacher))
        teacher_k = teacher.num_classes
        _check_teacher_input(teacher, dataset.sample_shape, "the data samples")
        context["teacher"] = {"kind": teacher.kind, "path": str(req.teacher),
                              "temperature": getattr(teacher, "temperature", None)}

    # ---- view gap
    with_view, view_reason = False, None
    if req.teacher_data:
        teacher_view = open_dataset(req.teacher_data, req.split, req.limit, role="teacher-data")
        _check_teacher_input(teacher, teacher_view.sample_shape, "the --teacher-data samples")
        inputs += teacher_view.inputs
        sources["x_teacher"] = teacher_view
        with_view = True
    elif req.view_probs:
        view = open_probabilities(req.view_probs, "probs")
        if int(view.shape[1]) != teacher_k:
            raise AuditInputError(f"{req.view_probs}: has K={view.shape[1]} columns, the teacher gives K={teacher_k}")
        inputs.append(_file_record("view-probs", req.view_probs))
        sources["view_probs"] = _limited(view, req.limit)
        with_view = True
    else:
        view_reason = "no second view was given (--teacher-data or --view-probs): the teacher saw the encoder's own inputs"

    spec, witness_source = _witness_from_flags(req, fixed_witness, fixed_where, latent_dim, teacher_k)
    plan = PassPlan(sources, encoder=encoder, teacher=teacher, with_view=with_view, input_shape=input_shape)
    if plan.num_samples == 0:
        raise AuditInputError("the audit set is empty: no samples to audit")
    state = CertificateState(spec, with_view=with_view, device=device)
    batch_size = parse_batch_size(req.batch_size)
    if batch_size == "auto":
        batch_size = auto_batch_size(plan, lambda: CertificateState(spec, with_view, device), device,
                                     dataset.sample_shape if dataset is not None else None, req.precision)
    start, stop = shard_range(plan.num_samples, ranks.rank, ranks.world_size)
    if hasattr(progress, "begin"):
        progress.begin(stop - start)
    outcome = stream_pass(plan, state, batch_size, device, start, stop, on_batch=progress, precision=req.precision)
    raise_for_nonfinite_inputs(combine_across_ranks(state, outcome.nonfinite_rows, ranks))
    numbers = state.compute()
    # Decoder/posterior diagnostics on a bounded sample of the audit set; never part of the verdict.
    # Only the rank that writes the report computes them: the others would discard the result.
    if not req.model_diagnostics:
        numbers.diagnostics["model"] = {"computed": False, "reason": "turned off (--no-model-diagnostics)"}
    elif not ranks.is_main:
        numbers.diagnostics["model"] = {"computed": False, "reason": "computed by rank 0 only"}
    else:
        numbers.diagnostics["model"] = model_diagnostics(plan, device)
    verdict = decide(numbers, req.confidence, req.min_margin)
    context["request"] = request_record(req)
    context["settings"] = {"batch_size": req.batch_size, "batch_size_used": outcome.batch_size,
                           "device": device.type, "precision": req.precision, "world_size": ranks.world_size,
                           "confidence": req.confidence, "min_margin": req.min_margin}
    inputs = [replace(record, sha256=resolve_digest(record.sha256)) for record in inputs]  # hashed during the pass
    return AuditResult(numbers, verdict, spec, witness_source, inputs, context, view_reason, loading.seconds)


def request_record(req: AuditRequest) -> dict:
    """The request as JSON data (paths as strings), so that `audit verify --recompute` can re-run it."""
    record = {}
    for f in fields(req):
        if f.name != "command":
            value = getattr(req, f.name)
            record[f.name] = str(value) if isinstance(value, Path) else value
    return record


@torch.no_grad()
def _probe_latent_dim(encoder: nn.Module, dataset: Dataset, input_shape, device) -> int:
    if dataset.num_samples == 0:
        raise AuditInputError("the audit set is empty: no samples to audit")
    x = to_unit_float(torch.from_numpy(dataset.read(0, 1).copy()).to(device))
    if input_shape is not None:
        x = x.reshape(1, *input_shape)
    try:
        mu, _ = encode_means(encoder, x)
    except RuntimeError as exc:
        raise AuditInputError(f"the encoder cannot run on the data's samples of shape {list(dataset.sample_shape)} ({str(exc).splitlines()[0][:120]})") from None
    if mu.ndim != 2:
        raise AuditInputError(f"encode(x) must return means of shape (batch, d), got {tuple(mu.shape)}")
    return int(mu.shape[1])
