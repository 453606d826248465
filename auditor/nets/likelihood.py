"""The decoder's likelihood p(x|z) of the reference models: its negative log and its mean E[x|z].

``model.decode(z)`` returns logits (``bernoulli``) or means (``gaussian``, unit variance); the
trainer's reconstruction term and the audit's decoder diagnostics both read the likelihood here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AuditInputError
from .base import Decodes

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LIKELIHOOD_MEANS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bernoulli": torch.sigmoid,
    "gaussian": lambda out: out,
}


def reconstruction_nll(model: torch.nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-sample −log p(x|z) in nats under the model's likelihood (bernoulli, or unit-variance gaussian)."""
    out = cast(Decodes, model).decode(z).reshape(x.shape[0], -1)
    target = x.reshape(x.shape[0], -1)
    likelihood = getattr(model, "likelihood", "bernoulli")
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(dim=1)
    if likelihood == "gaussian":
        return (0.5 * (out - target) ** 2 + HALF_LOG_2PI).sum(dim=1)
    raise AuditInputError(f"the trainer does not know the likelihood {likelihood!r} (known: bernoulli, gaussian)")


def decoder_mean(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """E[x | z] under the model's likelihood, flattened to (B, D)."""
    decoder = cast(Decodes, model)
    return LIKELIHOOD_MEANS[decoder.likelihood](decoder.decode(z)).reshape(z.shape[0], -1)
