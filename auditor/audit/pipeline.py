"""One audit from the user's inputs to its numbers and verdict: the pipeline.

:func:`run_audit` reads as the steps it takes: check the request, resolve and cross-check the
sources (:mod:`auditor.audit.resolve`), choose the batch size, stream this rank's rows through the
device pass into the certificate state, combine the ranks, compute the numbers, the model
diagnostics and the verdict. Nothing here knows a file format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..certificate.numbers import CertificateNumbers
from ..certificate.state import CertificateState
from ..certificate.verdict import Verdict, decide
from ..certificate.witness import WitnessSpec
from ..errors import AuditInputError
from ..sources.hashing import InputRecord, hashing_in_background, resolve_digest
from ..sources.regular_files import check_inputs_unchanged, watching_inputs
from . import helper_threads
from .batch_size import auto_batch_size, parse_batch_size
from .diagnostics import model_diagnostics
from .distributed import Ranks, combine_across_ranks, device_for_rank, process_group, ranks_from_env, shard_range
from .request import AuditRequest, check_request, request_record, resolve_device
from .resolve import Sources, resolve_sources
from .stream import raise_for_nonfinite_inputs, stream_pass


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


def run_audit(req: AuditRequest, progress=None) -> AuditResult:
    """The audit of ``req``; under torchrun, this rank's shard combined with every other rank's.

    ``progress`` is called with the row count of every batch done (and, when it has a
    ``begin`` method, with this rank's total rows first).
    """
    check_request(req)
    ranks = ranks_from_env()
    device = device_for_rank(resolve_device(req.device), ranks)
    with (
        process_group(device, ranks) as ranks,
        watching_inputs(),
        hashing_in_background(helper_threads.yield_to_forward_passes),
    ):
        try:
            return _audit(req, device, ranks, progress)
        except AuditInputError:
            check_inputs_unchanged()  # a file changed during the audit explains any error its new bytes caused
            raise


def _audit(req: AuditRequest, device: torch.device, ranks: Ranks, progress) -> AuditResult:
    sources = resolve_sources(req, device)
    plan, spec = sources.plan, sources.witness
    state = CertificateState(spec, with_view=plan.with_view, device=device)
    batch_size = _batch_size(req, sources, device)
    start, stop = shard_range(plan.num_samples, ranks.rank, ranks.world_size)
    if hasattr(progress, "begin"):
        progress.begin(stop - start)
    outcome = stream_pass(plan, state, batch_size, device, start, stop, on_batch=progress, precision=req.precision)
    raise_for_nonfinite_inputs(combine_across_ranks(state, outcome.nonfinite_rows, ranks))
    numbers = state.compute()
    numbers.diagnostics["model"] = _model_diagnostics(req, sources, ranks, device)
    verdict = decide(numbers, req.confidence, req.min_margin)
    context = {
        **sources.context,
        "request": request_record(req),
        "settings": {
            "batch_size": req.batch_size,
            "batch_size_used": outcome.batch_size,
            "device": device.type,
            "precision": req.precision,
            "world_size": ranks.world_size,
            "confidence": req.confidence,
            "min_margin": req.min_margin,
        },
    }
    inputs = [
        replace(record, sha256=resolve_digest(record.sha256)) for record in sources.inputs
    ]  # hashed during the pass
    # Every file is still the one first opened: the digests and the numbers describe the same bytes.
    check_inputs_unchanged()
    return AuditResult(
        numbers, verdict, spec, sources.witness_source, inputs, context, sources.view_gap_reason, sources.load_seconds
    )


def _batch_size(req: AuditRequest, sources: Sources, device: torch.device) -> int:
    batch_size = parse_batch_size(req.batch_size)
    if batch_size != "auto":
        return batch_size
    spec, with_view = sources.witness, sources.plan.with_view
    return auto_batch_size(
        sources.plan,
        lambda: CertificateState(spec, with_view, device),
        device,
        sources.data.sample_shape if sources.data is not None else None,
        req.precision,
    )


def _model_diagnostics(req: AuditRequest, sources: Sources, ranks: Ranks, device: torch.device) -> dict:
    """Decoder/posterior diagnostics on a bounded sample of the audit set; never part of the verdict.
    Only the rank that writes the report computes them: the others would discard the result."""
    if not req.model_diagnostics:
        return {"computed": False, "reason": "turned off (--no-model-diagnostics)"}
    if not ranks.is_main:
        return {"computed": False, "reason": "computed by rank 0 only"}
    return model_diagnostics(sources.plan, device)
