"""The device pass: one sweep over aligned row sources that feeds the certificate state.

Sources are row-sliceable arrays (:class:`~auditor.tensorfile.ArrayReader`) under fixed roles:
``x`` (the encoder's inputs), ``x_teacher`` (the teacher's view of the same samples), ``mu`` and
``logvar`` (precomputed latents), ``probs`` and ``view_probs`` (precomputed teacher outputs).
What is not given is computed: μ by the encoder on ``x``; p by the teacher on ``x_teacher``
(or ``x``); p' by the teacher on ``x`` when a view gap is asked for. The same loop serves the
CLI, sharded runs (``start``/``stop``) and training-time monitors.

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

import contextlib
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch
from torch import nn

from . import helper_threads
from .batch_size import is_out_of_memory
from ..certificate.state import CertificateState, nonfinite_rows
from ..sources.datasets.dataset import to_unit_float
from ..errors import AuditInputError
from ..sources.arrays import ArrayReader

ROLES = ("x", "x_teacher", "mu", "logvar", "probs", "view_probs")
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PREFETCH_DEPTH = 2  # host batches read ahead: one being copied, one waiting
# The update worker applies consecutive batches' outputs together, in chunks of at least this
# many rows. An update is ~150 small float64 operations whatever its row count, and each takes
# and gives back the GIL that the forward passes' thread needs too: on the benchmark's 2-core
# CPU (1024-row batches, 9 interleaved repeats) ours / floor was 1.14 updating per batch and
# 1.10 in 4096-row chunks.
UPDATE_CHUNK_ROWS = 4096


def encode_means(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """μ (and log σ² when the model gives one) from ``model.encode``, which may return either."""
    out = model.encode(x)
    if isinstance(out, (tuple, list)):
        mu = out[0]
        logvar = out[1] if len(out) > 1 else None
    else:
        mu, logvar = out, None
    return mu, logvar


@dataclass
class PassPlan:
    sources: dict[str, ArrayReader]
    encoder: nn.Module | None = None
    teacher: nn.Module | None = None
    with_view: bool = False
    input_shape: tuple[int, ...] | None = None  # the encoder's input shape, when it differs from the data's
    num_samples: int = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.sources) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown source roles {sorted(unknown)}")
        sizes = {role: int(src.shape[0]) for role, src in self.sources.items()}
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{r}: {n}" for r, n in sizes.items())
            raise AuditInputError(f"inputs do not have the same number of samples ({detail})")
        self.num_samples = next(iter(sizes.values())) if sizes else 0


@dataclass
class PassOutcome:
    batch_size: int  # the batch size in use at the end: smaller than asked after out-of-memory halving
    nonfinite_rows: torch.Tensor  # device scalar: input rows with NaN/inf (checked by raise_for_nonfinite_inputs)


class Batch(NamedTuple):
    """Rows [begin, end) of every source, by role; ``nonfinite_rows`` (a scalar tensor) is the
    count of input rows holding NaN/inf, or None where it is still to be counted on the device."""

    begin: int
    end: int
    tensors: dict[str, torch.Tensor]
    nonfinite_rows: torch.Tensor | None = None


def row_ranges(start: int, stop: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for begin in range(start, stop, batch_size):
        yield begin, min(begin + batch_size, stop)


def precision_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` (None for fp32: no autocast at all)."""
    if precision not in PRECISIONS:
        raise AuditInputError(f"unknown --precision {precision!r} (use {', '.join(PRECISIONS)})")
    return PRECISIONS[precision]


def forward_context(device: torch.device, precision: str):
    """Autocast for the encoder/teacher forward at ``precision``; a no-op for fp32."""
    dtype = precision_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------- host side: reading

def _read_host_batch(sources: dict[str, ArrayReader], begin: int, end: int, pin: bool) -> dict[str, torch.Tensor]:
    """Rows [begin, end) of every source as CPU tensors in their stored dtype (pinned for CUDA)."""
    batch = {}
    for role, src in sources.items():
        rows = src.read(begin, end)
        # Row-major, writable and in this machine's byte order, as torch.from_numpy needs: file
        # readers return such fresh arrays; any other is copied here, in the reader thread.
        tensor = torch.from_numpy(np.require(rows, dtype=rows.dtype.newbyteorder("="), requirements=("C", "W")))
        batch[role] = tensor.pin_memory() if pin else tensor
    return batch


_DONE = object()


def host_batches(
    sources: dict[str, ArrayReader], ranges: list[tuple[int, int]], pin: bool = False, prefetch: bool = True,
    count_nonfinite: bool = False,
) -> Iterator[Batch]:
    """A :class:`Batch` for each range; with ``prefetch`` a background thread reads ahead.

    The reads (file reads, copies, pinning) release the GIL, so on
    a CPU they overlap with the forward passes of the batch before. ``count_nonfinite`` counts
    the non-finite input rows there too (for a CPU pass, whose host batches are its device
    batches). A reader error is raised in the caller, at the batch where it happened.
    """

    def read(begin: int, end: int) -> Batch:
        tensors = _read_host_batch(sources, begin, end, pin)
        return Batch(begin, end, tensors, input_nonfinite_rows(tensors) if count_nonfinite else None)

    if not prefetch:
        for begin, end in ranges:
            yield read(begin, end)
        return

    slots: queue.Queue = queue.Queue(maxsize=PREFETCH_DEPTH)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read_all() -> None:
        helper_threads.yield_to_forward_passes()
        try:
            for begin, end in ranges:
                if not put(read(begin, end)):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    reader = threading.Thread(target=read_all, name="audit-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


# ---------------------------------------------------------------------------- device side

def device_batches(host: Iterator[Batch], device: torch.device, cuda=None) -> Iterator[Batch]:
    """Host batches moved to ``device`` one batch ahead of use.

    On CUDA the copy of batch i+1 is issued (non-blocking, from pinned memory) on a side stream
    before batch i is handed out, so copies overlap compute; the compute stream waits only for
    the event recorded after batch i's own copy. On CPU the tensors are used as they are.
    (``cuda`` is ``torch.cuda``; the tests pass a stand-in.)
    """
    if device.type != "cuda":
        yield from host
        return
    cuda = torch.cuda if cuda is None else cuda
    copy_stream = cuda.Stream(device)

    def issue(item: Batch):
        with cuda.stream(copy_stream):
            moved = {role: _copy_to(t, device) for role, t in item.tensors.items()}
            copied = cuda.Event()
            copied.record(copy_stream)
        return item._replace(tensors=moved), copied

    def hand_out(issued) -> Batch:
        item, copied = issued
        compute = cuda.current_stream()
        compute.wait_event(copied)
        for tensor in item.tensors.values():
            tensor.record_stream(compute)  # the caching allocator must not reuse it before compute is done
        return item

    pending = None
    for item in host:
        ready, pending = pending, issue(item)
        if ready is not None:
            yield hand_out(ready)
    if pending is not None:
        yield hand_out(pending)


def _copy_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.to(device, non_blocking=True)


def input_nonfinite_rows(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows holding NaN/inf in the batch's inputs (``x`` and ``x_teacher``), as a scalar on their device."""
    counts = [nonfinite_rows(tensors[role]) for role in ("x", "x_teacher") if role in tensors]
    if not counts:
        return torch.zeros((), dtype=torch.int64, device=next(iter(tensors.values())).device)
    return counts[0] if len(counts) == 1 else counts[0] + counts[1]


def _state_references(state: CertificateState) -> dict[str, torch.Tensor]:
    """The state's tensors, not copied: ``update`` replaces them rather than writing into them,
    so these references are a free snapshot to roll back to after a failed batch."""
    refs = {f"p_ce.{k}": v for k, v in state.p_ce.tensors().items()}
    refs.update({f"mu.{k}": v for k, v in state.mu.tensors().items()})
    refs.update({name: slot.value for name, slot in state.fields.items()})
    return refs


@dataclass
class BatchOutputs:
    """What the certificate state needs from one batch (``state.update``'s arguments)."""

    mu: torch.Tensor
    p: torch.Tensor
    logvar: torch.Tensor | None
    p_view: torch.Tensor | None

    def update(self, state: CertificateState) -> None:
        state.update(self.mu, self.p, self.logvar, self.p_view)

    @property
    def rows(self) -> int:
        return int(self.mu.shape[0])

    @classmethod
    def concatenated(cls, parts: list["BatchOutputs"]) -> "BatchOutputs":
        """The outputs of consecutive batches as one batch's."""
        if len(parts) == 1:
            return parts[0]

        def cat(name: str) -> torch.Tensor | None:
            tensors = [getattr(part, name) for part in parts]
            return None if tensors[0] is None else torch.cat(tensors)

        return cls(cat("mu"), cat("p"), cat("logvar"), cat("p_view"))


def forward_batch(plan: PassPlan, batch: dict[str, torch.Tensor], precision: str = "fp32") -> BatchOutputs:
    """Run the encoder/teacher (what the plan does not give precomputed) on one device batch."""
    x = to_unit_float(batch["x"]) if "x" in batch else None
    x_teacher = to_unit_float(batch["x_teacher"]) if "x_teacher" in batch else x
    device = next(iter(batch.values())).device
    with forward_context(device, precision):
        if "mu" in batch:
            mu, logvar = batch["mu"], batch.get("logvar")
        else:
            x_enc = x if plan.input_shape is None else x.reshape(x.shape[0], *plan.input_shape)
            mu, logvar = encode_means(plan.encoder, x_enc)
        p = batch["probs"] if "probs" in batch else plan.teacher(x_teacher)
        p_view = None
        if plan.with_view:
            p_view = batch["view_probs"] if "view_probs" in batch else plan.teacher(x)
    return BatchOutputs(mu, p, logvar, p_view)


def update_from_batch(plan: PassPlan, state: CertificateState, batch: dict[str, torch.Tensor],
                      precision: str = "fp32") -> None:
    """Run the encoder/teacher on one device batch and add it to ``state``."""
    forward_batch(plan, batch, precision).update(state)


class _UpdateWorker:
    """Applies ``state.update`` on a second thread, in submission order, while the caller runs
    the next batches' forward passes.

    Submitted outputs are applied in chunks: consecutive batches are concatenated until they
    hold at least ``chunk_rows`` rows (the rest when the pass ends). The chunks depend only on
    the batch sizes, so a pass gives the same bits every time; they differ from in-line
    per-batch updates only in the rounding of the exact merge.

    For a CPU with a core to spare, where the update's float64 operations would otherwise add
    to the forward passes' time (torch releases the GIL inside them). On CUDA the kernels are
    asynchronous already and the update stays in-line.
    """

    def __init__(self, state: CertificateState):
        self.state = state
        self.chunk_rows = UPDATE_CHUNK_ROWS
        # Batches are gathered into chunks on the caller's side, so the worker is woken once a
        # chunk, not once a batch.
        self.pending: list[BatchOutputs] = []
        self.pending_rows = 0
        self.jobs: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="audit-update", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        helper_threads.yield_to_forward_passes()
        while (chunk := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    BatchOutputs.concatenated(chunk).update(self.state)
                except BaseException as exc:  # raised in the caller at the next submit or at finish
                    self.error = exc

    def submit(self, outputs: BatchOutputs) -> None:
        self._raise()
        self.pending.append(outputs)
        self.pending_rows += outputs.rows
        if self.pending_rows >= self.chunk_rows:
            self._hand_over()

    def _hand_over(self) -> None:
        if self.pending:
            self.jobs.put(self.pending)
            self.pending, self.pending_rows = [], 0

    def finish(self) -> None:
        self._hand_over()
        self.close()
        self._raise()

    def close(self) -> None:
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


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
    consecutive batches (:class:`_UpdateWorker`), overlapping them with the next forward passes
    (an out-of-memory error in the update is then not retried); None chooses it on a CPU with
    a core to spare (:func:`~auditor.helper_threads.spare_core`).
    """
    precision_dtype(precision)
    stop = plan.num_samples if stop is None else stop
    ranges = list(row_ranges(start, stop, batch_size))
    pin = device.type == "cuda" and torch.cuda.is_available()
    if pipeline is None:
        pipeline = device.type == "cpu" and helper_threads.spare_core()
    worker = _UpdateWorker(state) if pipeline else None
    nonfinite = torch.zeros((), dtype=torch.int64, device=state.device)
    compute_size = batch_size
    try:
        host = host_batches(plan.sources, ranges, pin, prefetch, count_nonfinite=device.type == "cpu")
        for begin, end, batch, counted in device_batches(host, device):
            counted = input_nonfinite_rows(batch) if counted is None else counted
            nonfinite = nonfinite + counted.to(state.device)
            offset, rows = 0, end - begin
            while offset < rows:
                size = min(compute_size, rows - offset)
                snapshot = None if worker else _state_references(state)
                try:
                    outputs = forward_batch(plan, _slice(batch, offset, offset + size), precision)
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
