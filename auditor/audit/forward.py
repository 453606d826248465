"""One batch's forward passes: the encoder's means and the teacher's probabilities (what the plan
does not give precomputed), at the requested precision, as the certificate state's update needs them."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..certificate.state import CertificateState
from ..errors import AuditInputError
from ..sources.datasets.dataset import to_unit_float
from ..sources.models.encode import read_means
from .plan import PassPlan

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


# The teacher's probabilities, or a function that computes them (forward_batch's ``defer_teacher``).
Probabilities = torch.Tensor | Callable[[], torch.Tensor]


@dataclass
class BatchOutputs:
    """What the certificate state needs from one batch (``state.update``'s arguments).

    ``p`` and ``p_view`` may be left for the update's thread to finish (``defer_teacher`` of
    :func:`forward_batch`); :meth:`resolved` computes them.
    """

    mu: torch.Tensor
    p: Probabilities
    logvar: torch.Tensor | None
    p_view: Probabilities | None

    def resolved(self) -> BatchOutputs:
        """These outputs with every deferred probability computed."""
        p, p_view = _computed(self.p), None if self.p_view is None else _computed(self.p_view)
        return BatchOutputs(self.mu, p, self.logvar, p_view)

    def update(self, state: CertificateState) -> None:
        p_view = None if self.p_view is None else _computed(self.p_view)
        state.update(self.mu, _computed(self.p), self.logvar, p_view)

    @property
    def rows(self) -> int:
        return int(self.mu.shape[0])

    @classmethod
    def concatenated(cls, parts: list[BatchOutputs]) -> BatchOutputs:
        """The outputs of consecutive batches as one batch's (deferred probabilities computed)."""
        parts = [part.resolved() for part in parts]
        if len(parts) == 1:
            return parts[0]

        def cat(name: str) -> torch.Tensor | None:
            tensors = [getattr(part, name) for part in parts]
            return None if tensors[0] is None else torch.cat(tensors)

        mu, p = torch.cat([part.mu for part in parts]), torch.cat([_computed(part.p) for part in parts])
        return cls(mu, p, cat("logvar"), cat("p_view"))


def _computed(p: Probabilities) -> torch.Tensor:
    return p if isinstance(p, torch.Tensor) else p()


def forward_batch(
    plan: PassPlan, batch: dict[str, torch.Tensor], precision: str = "fp32", defer_teacher: bool = False
) -> BatchOutputs:
    """Run the encoder/teacher (what the plan does not give precomputed) on one device batch.

    ``defer_teacher`` leaves the teacher's posterior to whoever applies the outputs (the update
    worker, on the core that the forward passes leave free), for a teacher that says it is
    ``safe_on_any_thread`` (the PCA → GMM teacher: its forward writes nothing, so it may run on
    the worker while this thread runs the next batch's). It runs there under this pass's
    autocast, so it gives the same bits on either thread. On the benchmark's 2-core CPU (fitted
    teacher, 5 interleaved repeats) ours / floor went from 1.04–1.08, 1.06–1.07 and 1.08–1.12 at
    K = 10, 100 and 200, deferring the repair and the softmax only, to 0.84, 0.88 and 0.97.
    """
    x = to_unit_float(batch["x"]) if "x" in batch else None
    x_teacher = to_unit_float(batch["x_teacher"]) if "x_teacher" in batch else x
    device = next(iter(batch.values())).device
    with forward_context(device, precision):
        if "mu" in batch:
            mu, logvar = batch["mu"], batch.get("logvar")
        else:
            # Means not given: the plan has inputs and an encoder to run on them.
            assert x is not None and plan.encoder is not None
            x_enc = x if plan.input_shape is None else x.reshape(x.shape[0], *plan.input_shape)
            mu, logvar, record = read_means(plan.encoder, x_enc)
            if plan.encode_record is not None and record != plan.encode_record:
                raise AuditInputError(
                    f"the encoder's output changed between batches: {record.as_dict()} after {plan.encode_record.as_dict()}"
                )
        teach = functools.partial(_run_teacher, plan, defer=defer_teacher, device=device, precision=precision)
        p = batch["probs"] if "probs" in batch else teach(x_teacher)
        p_view = None
        if plan.with_view:
            p_view = batch["view_probs"] if "view_probs" in batch else teach(x)
    return BatchOutputs(mu, p, logvar, p_view)


def _run_teacher(
    plan: PassPlan, x: torch.Tensor | None, defer: bool, device: torch.device, precision: str
) -> Probabilities:
    teacher = plan.teacher
    assert teacher is not None  # probabilities not given precomputed: the plan has a teacher to run
    if not (defer and getattr(teacher, "safe_on_any_thread", False)):
        return teacher(x)

    def posterior() -> torch.Tensor:
        with forward_context(device, precision):
            return teacher(x)

    return posterior


def update_from_batch(
    plan: PassPlan, state: CertificateState, batch: dict[str, torch.Tensor], precision: str = "fp32"
) -> None:
    """Run the encoder/teacher on one device batch and add it to ``state``."""
    forward_batch(plan, batch, precision).update(state)
