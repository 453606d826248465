"""The device pass: one sweep over aligned row sources that feeds the certificate state.

Sources are row-sliceable arrays under the roles of :mod:`auditor.audit.plan`. The same loop
serves the CLI, sharded runs (``start``/``stop``) and training-time monitors.

How the pass stays as fast as the forward passes themselves:

- a background thread reads the next batches from disk (row ranges of ``.npy`` and
  ``.safetensors`` files) while the current one computes; on CUDA it also pins them, so that the copy to the
  device is asynchronous (``non_blocking``) and issued on a side stream one batch ahead;
- batches cross to the device as stored (uint8 stays uint8) and are scaled there;
- on a CPU with a core that torch's threads leave free, the certificate state's update runs on
  a second thread, overlapping the next batches' forward passes, in order and on chunks of at
  least ``UPDATE_CHUNK_ROWS`` rows; with every core in torch's use it stays in-line, where it
  measured faster (a busy core gains nothing from another thread);
- nothing in the loop waits on the device: non-finite inputs are counted once per batch on the
  device (on a CPU, by the reader thread, off the forward passes' core) and the certificate
  state defers its own checks to ``compute()``, so an audit synchronises with the host once, at
  the end;
- ``precision`` runs the encoder/teacher forward under autocast (bf16/fp16); the certificate
  arithmetic stays float64 (:class:`CertificateState` casts);
- on an out-of-memory error the batch is halved and retried, with the state rolled back to what
  it was before that batch, so the numbers equal those of a run at the smaller batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..certificate.state import CertificateState
from ..errors import AuditInputError
from ..sources.arrays import row_ranges
from . import helper_threads
from .forward import forward_batch, precision_dtype
from .memory import is_out_of_memory
from .plan import PassPlan
from .prefetch import host_batches, input_nonfinite_rows
from .transfer import device_batches
from .update_worker import UpdateWorker


@dataclass
class PassOutcome:
    batch_size: int  # the batch size in use at the end: smaller than asked after out-of-memory halving
    nonfinite_rows: torch.Tensor  # device scalar: input rows with NaN/inf (checked by raise_for_nonfinite_inputs)


def _state_references(state: CertificateState) -> dict[str, torch.Tensor]:
    """The state's tensors, not copied: ``update`` replaces them rather than writing into them,
    so these references are a free snapshot to roll back to after a failed batch."""
    refs = {f"p_ce.{k}": v for k, v in state.p_ce.tensors().items()}
    refs.update({f"mu.{k}": v for k, v in state.mu.tensors().items()})
    refs.update({name: slot.value for name, slot in state.fields.items()})
    return refs


def _slice(batch: dict[str, torch.Tensor], begin: int, end: int) -> dict[str, torch.Tensor]:
    return {role: t[begin:end] for role, t in batch.items()}


@torch.no_grad()
def stream_pass(
    plan: PassPlan,
    state: CertificateState,
    batch_size: int,
    device: torch.device,
    start: int = 0,
    stop: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    precision: str = "fp32",
    prefetch: bool = True,
    pipeline: bool | None = None,
) -> PassOutcome:
    """Feed rows [start, stop) into ``state``; input checks are left to the caller (see run_pass).

    Batches of ``batch_size`` rows are read; each is computed in sub-batches of the current
    compute size, which halves on every out-of-memory error (the failed sub-batch is retried,
    after rolling the state back when the update was part of it), so later batches run at the
    size that fitted. ``pipeline`` applies the state updates on a worker thread, in chunks of
    consecutive batches (:class:`UpdateWorker`), overlapping them with the next forward passes
    (an out-of-memory error in the update is then not retried); None chooses it on a CPU with
    a core to spare (:func:`~auditor.helper_threads.spare_core`).
    """
    precision_dtype(precision)
    stop = plan.num_samples if stop is None else stop
    ranges = list(row_ranges(start, stop, batch_size))
    pin = device.type == "cuda" and torch.cuda.is_available()
    if pipeline is None:
        pipeline = device.type == "cpu" and helper_threads.spare_core()
    worker = UpdateWorker(state) if pipeline else None
    nonfinite = torch.zeros((), dtype=torch.int64, device=state.device)
    compute_size = batch_size
    try:
        host = host_batches(plan.sources, ranges, pin, prefetch, count_nonfinite=device.type == "cpu")
        for item in device_batches(host, device):
            batch, counted = item.tensors, item.nonfinite_rows
            counted = input_nonfinite_rows(batch) if counted is None else counted
            nonfinite = nonfinite + counted.to(state.device)
            offset, rows = 0, item.size
            while offset < rows:
                size = min(compute_size, rows - offset)
                snapshot = None if worker else _state_references(state)
                try:
                    outputs = forward_batch(
                        plan,
                        _slice(batch, offset, offset + size),
                        precision,
                        defer_teacher=worker is not None and worker.has_room(),
                    )
                    if worker is None:
                        outputs.update(state)
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    outputs = None
                if outputs is None:  # handled here, once the exception's frames (and tensors) are gone
                    if snapshot is not None:
                        state.load_state_dict(snapshot)
                    if size == 1:
                        raise AuditInputError("out of device memory even at batch size 1")
                    compute_size = max(1, size // 2)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                if worker is not None:
                    worker.submit(outputs)
                offset += size
            if on_batch is not None:
                on_batch(rows)
        if worker is not None:
            worker.finish()
    finally:
        if worker is not None:
            worker.close()
    return PassOutcome(batch_size=compute_size, nonfinite_rows=nonfinite)


def raise_for_nonfinite_inputs(count: torch.Tensor) -> None:
    """Raise once, after the pass (this is the audit's one host synchronisation for inputs)."""
    bad = int(count)
    if bad > 0:
        raise AuditInputError(f"input data contain NaN or inf in {bad} samples")


def run_pass(
    plan: PassPlan,
    state: CertificateState,
    batch_size: int,
    device: torch.device,
    start: int = 0,
    stop: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    precision: str = "fp32",
    prefetch: bool = True,
    pipeline: bool | None = None,
) -> int:
    """Feed rows [start, stop) of the plan's sources into ``state``, batch by batch.

    Non-finite inputs are counted on the device and raised once at the end, so the loop never
    waits on the host; no report exists before the pass has finished. Returns the batch size in
    use at the end (smaller than ``batch_size`` after out-of-memory halving).
    """
    outcome = stream_pass(plan, state, batch_size, device, start, stop, on_batch, precision, prefetch, pipeline)
    raise_for_nonfinite_inputs(outcome.nonfinite_rows)
    return outcome.batch_size
