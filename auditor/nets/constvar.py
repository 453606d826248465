"""``const-var``: a VAE whose posterior variance is one learned constant shared by all samples.

In the spirit of Fyffe (2021, "There and Back Again"): the encoder gives means only (its last
layer has d outputs, half of an ``mlp`` encoder's 2·d), and q(z|x) = N(μ(x), σ²I) with one
learned log σ² (tensor ``posterior_logvar``, shape [1]). The architecture JSON says so with
``"posterior_variance": "shared"``. ``encode(x)`` returns ``(μ, log σ² broadcast to μ's shape)``
so that every consumer of ``(mu, logvar)`` — the KL of the loss, the certificate's prior-KL
diagnostics, the mutual-information estimate — sees the true posterior without a special case;
the certificate itself reads only μ. Tensors: ``encoder.{j}.*``, ``decoder.{j}.*`` as in ``mlp``,
and ``posterior_logvar``. The default likelihood is ``gaussian`` (decoder outputs means).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import AuditInputError, shown
from .base import ACTIVATIONS, LIKELIHOODS, arch_choice, arch_field, arch_input_shape, linear_stack, run_stack
from .mlp import MLPVAE

POSTERIOR_VARIANCE = "shared"


class ConstVarVAE(MLPVAE):
    def __init__(self, input_shape, hidden, latent_dim, activation="relu", likelihood="gaussian"):
        super().__init__(input_shape, hidden, latent_dim, activation, likelihood)
        self.encoder = linear_stack([math.prod(self.input_shape), *hidden, latent_dim])
        self.posterior_logvar = nn.Parameter(torch.zeros(1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = run_stack(self.encoder, x.reshape(x.shape[0], -1), self._act)
        # A sum rather than expand(): a view of the parameter would still require grad under no_grad.
        return mu, torch.zeros_like(mu) + self.posterior_logvar


def build_constvar(arch: dict, where: str) -> ConstVarVAE:
    variance = arch.get("posterior_variance", POSTERIOR_VARIANCE)
    if variance != POSTERIOR_VARIANCE:
        raise AuditInputError(
            f'{where}: const-var architecture needs "posterior_variance": "shared", got {shown(variance)}'
        )
    return ConstVarVAE(
        input_shape=arch_input_shape(arch, where),
        hidden=arch_field(arch, "hidden", list, where),
        latent_dim=arch_field(arch, "latent_dim", int, where),
        activation=arch_choice(arch, "activation", ACTIVATIONS, "relu", where),
        likelihood=arch_choice(arch, "likelihood", LIKELIHOODS, "gaussian", where),
    )
