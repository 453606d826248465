"""One batch's forward passes: the encoder's means and the teacher's probabilities (what the plan
does not give precomputed), at the requested precision, as the certificate state's update needs them."""

from __future__ import annotations

import contextlib
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


# The teacher's probabilities, or a function that computes them (a teacher's ``posterior_later``).
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

    ``defer_teacher`` leaves what a teacher offers to finish later (its ``posterior_later``: the
    PCA → GMM teacher's repair and softmax) to whoever applies the outputs: the update worker,
    on the core that the forward passes leave free. On the benchmark's 2-core CPU at K = 100, with
    a fitted teacher, that took about 0.2 CPU s per 100,000 rows off the forward passes' thread
    (1.24 → 1.03–1.08), the thread that had set the pace.
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
        p = batch["probs"] if "probs" in batch else _run_teacher(plan, x_teacher, defer_teacher)
        p_view = None
        if plan.with_view:
            p_view = batch["view_probs"] if "view_probs" in batch else _run_teacher(plan, x, defer_teacher)
    return BatchOutputs(mu, p, logvar, p_view)


def _run_teacher(plan: PassPlan, x: torch.Tensor | None, defer: bool) -> Probabilities:
    assert plan.teacher is not None  # probabilities not given precomputed: the plan has a teacher to run
    later = getattr(plan.teacher, "posterior_later", None) if defer else None
    return plan.teacher(x) if later is None else later(x)


def update_from_batch(
    plan: PassPlan, state: CertificateState, batch: dict[str, torch.Tensor], precision: str = "fp32"
) -> None:
    """Run the encoder/teacher on one device batch and add it to ``state``."""
    forward_batch(plan, batch, precision).update(state)
