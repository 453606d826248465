"""``mlp``: the reference VAE on flattened inputs (docs/formats.md).

Linear layers with the activation between them; the encoder's last layer gives [μ, log σ²]
(2·d outputs), the decoder's the logits (bernoulli) or means (gaussian) of the flattened input.
Tensors ``encoder.{j}.*`` and ``decoder.{j}.*``, j = 0, 1, … over the Linear layers only.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from .base import (
    ACTIVATIONS,
    LIKELIHOODS,
    ReferenceVAE,
    arch_choice,
    arch_field,
    arch_input_shape,
    linear_stack,
    run_stack,
)


class MLPVAE(ReferenceVAE):
    """The reference ``mlp`` VAE: flattened input, Linear layers, last encoder layer gives [μ, log σ²]."""

    def __init__(self, input_shape, hidden, latent_dim, activation="relu", likelihood="bernoulli"):
        super().__init__(input_shape, latent_dim, activation, likelihood)
        D = math.prod(self.input_shape)
        self.encoder = linear_stack([D, *hidden, 2 * latent_dim])
        # A module, not only a ModuleList: lidvae puts its own decoder here (and overrides decode).
        self.decoder: nn.Module = linear_stack([latent_dim, *reversed(hidden), D])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = run_stack(self.encoder, x.reshape(x.shape[0], -1), self._act)
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return run_stack(cast(nn.ModuleList, self.decoder), z, self._act).reshape(z.shape[0], *self.input_shape)


def build_mlp(arch: dict, where: str) -> MLPVAE:
    shape = arch_input_shape(arch, where)
    return MLPVAE(
        input_shape=shape,
        hidden=arch_field(arch, "hidden", list, where),
        latent_dim=arch_field(arch, "latent_dim", int, where),
        activation=arch_choice(arch, "activation", ACTIVATIONS, "relu", where),
        likelihood=arch_choice(arch, "likelihood", LIKELIHOODS, "bernoulli", where),
    )
