"""The device pass: one sweep over aligned row sources that feeds the certificate state.

Sources are row-sliceable arrays (:class:`~auditor.tensorfile.ArrayReader`) under fixed roles:
``x`` (the encoder's inputs), ``x_teacher`` (the teacher's view of the same samples), ``mu`` and
``logvar`` (precomputed latents), ``probs`` and ``view_probs`` (precomputed teacher outputs).
What is not given is computed: μ by the encoder on ``x``; p by the teacher on ``x_teacher``
(or ``x``); p' by the teacher on ``x`` when a view gap is asked for. The same loop serves the
CLI, sharded runs (``start``/``stop``) and training-time monitors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .certificate import CertificateState
from .data import to_unit_float
from .errors import AuditInputError
from .tensorfile import ArrayReader

ROLES = ("x", "x_teacher", "mu", "logvar", "probs", "view_probs")


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


def row_ranges(start: int, stop: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for begin in range(start, stop, batch_size):
        yield begin, min(begin + batch_size, stop)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)


def _count_nonfinite_rows(x: torch.Tensor) -> torch.Tensor:
    return (~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).sum()


@torch.no_grad()
def run_pass(
    plan: PassPlan,
    state: CertificateState,
    batch_size: int,
    device: torch.device,
    start: int = 0,
    stop: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Feed rows [start, stop) of the plan's sources into ``state``, batch by batch.

    Non-finite inputs are counted on the device and raised once at the end, so the loop never
    waits on the host; no report exists before the pass has finished.
    """
    stop = plan.num_samples if stop is None else stop
    bad_rows = torch.zeros((), dtype=torch.int64, device=device)
    for begin, end in row_ranges(start, stop, batch_size):
        batch = {role: _tensor(src.read(begin, end), device) for role, src in plan.sources.items()}
        x = to_unit_float(batch["x"]) if "x" in batch else None
        x_teacher = to_unit_float(batch["x_teacher"]) if "x_teacher" in batch else x
        for inputs in {id(t): t for t in (x, x_teacher) if t is not None}.values():
            bad_rows += _count_nonfinite_rows(inputs)

        if "mu" in batch:
            mu, logvar = batch["mu"], batch.get("logvar")
        else:
            x_enc = x if plan.input_shape is None else x.reshape(x.shape[0], *plan.input_shape)
            mu, logvar = encode_means(plan.encoder, x_enc)
        p = batch["probs"] if "probs" in batch else plan.teacher(x_teacher)
        p_view = None
        if plan.with_view:
            p_view = batch["view_probs"] if "view_probs" in batch else plan.teacher(x)
        state.update(mu, p, logvar, p_view)
        if on_batch is not None:
            on_batch(end - begin)
    if int(bad_rows) > 0:
        raise AuditInputError(f"input data contain NaN or inf in {int(bad_rows)} samples")
