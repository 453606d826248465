"""What ``model.encode(x)`` returned, as the latent means μ (and log σ² when the model gives them)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ...nets.base import Encodes


def encode_means(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """μ (and log σ² when the model gives one) from ``model.encode``, which may return either."""
    out = cast(Encodes, model).encode(x)
    if isinstance(out, (tuple, list)):
        mu = out[0]
        logvar = out[1] if len(out) > 1 else None
    else:
        mu, logvar = out, None
    return mu, logvar
