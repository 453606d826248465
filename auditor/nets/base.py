"""What every reference architecture shares: activations, likelihoods, architecture-JSON fields,
Linear stacks and the :class:`ReferenceVAE` base.

Each model exposes ``encode(x) -> (mu, logvar)`` (``logvar`` may be None for models that do not
produce per-sample variances) and ``decode(z)``, which returns logits (bernoulli likelihood) or
means (gaussian likelihood) of the input. Tensor names are part of the file format (docs/formats.md),
so that other programs can write checkpoints we read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AuditInputError, shown

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
    "softplus": F.softplus,
    "leaky_relu": F.leaky_relu,
    "sigmoid": torch.sigmoid,
}
LIKELIHOODS = ("bernoulli", "gaussian")


# nn.Module types attributes it does not know as tensors or submodules, so a module known to have
# encode (or decode) is cast to one of these before the call.
class Encodes(Protocol):
    def encode(self, x: torch.Tensor) -> Any: ...  # (mu, logvar), or mu alone for models of other frameworks


class Decodes(Protocol):
    likelihood: str  # one of LIKELIHOODS (other models' decoders are checked before use)

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


# Limits on an architecture's JSON (docs/formats.md): every size a positive integer below
# MAX_SIZE, every list of sizes at most MAX_LAYERS long. The parameter budget is nets/registry's.
MAX_SIZE = 2**31 - 1
MAX_LAYERS = 64


def _size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SIZE


def arch_field(arch: dict, key: str, kind: type, where: str):
    if key not in arch:
        raise AuditInputError(f"{where}: architecture has no {key!r}")
    value = arch[key]
    if kind is int and not _size(value):
        raise AuditInputError(f"{where}: architecture {key!r} must be an integer in 1..{MAX_SIZE}, got {shown(value)}")
    if kind is list and not (isinstance(value, list) and len(value) <= MAX_LAYERS and all(_size(v) for v in value)):
        raise AuditInputError(
            f"{where}: architecture {key!r} must be a list of at most {MAX_LAYERS} integers in 1..{MAX_SIZE}, "
            f"got {shown(value)}"
        )
    if kind is str and not isinstance(value, str):
        raise AuditInputError(f"{where}: architecture {key!r} must be a string, got {shown(value)}")
    return value


def arch_input_shape(arch: dict, where: str) -> list[int]:
    """``input_shape``: the sizes of one sample, at least one dimension."""
    shape = arch_field(arch, "input_shape", list, where)
    if not shape:
        raise AuditInputError(f"{where}: architecture 'input_shape' must have at least one dimension")
    return shape


def arch_choice(arch: dict, key: str, options, default: str, where: str) -> str:
    value = arch.get(key, default)
    if not isinstance(value, str) or value not in options:  # a list or dict would not even hash
        raise AuditInputError(f"{where}: unknown {key} {shown(value)} (known: {', '.join(options)})")
    return value


def linear_stack(sizes: list[int]) -> nn.ModuleList:
    # A ModuleList rather than nn.Sequential: the format numbers Linear layers consecutively
    # (encoder.0, encoder.1, …) with activations carrying no tensors and no index.
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


def run_stack(layers: nn.ModuleList, h: torch.Tensor, activation) -> torch.Tensor:
    for j, layer in enumerate(layers):
        h = layer(h)
        if j < len(layers) - 1:
            h = activation(h)
    return h


class ReferenceVAE(nn.Module):
    """What every reference architecture carries: the trainer and the diagnostics read these."""

    def __init__(self, input_shape, latent_dim, activation="relu", likelihood="bernoulli"):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.activation_name = activation
        self._act = ACTIVATIONS[activation]
