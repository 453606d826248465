"""``conv``: the reference convolutional VAE for C×H×W images (CIFAR's 3×32×32 by default).

Architecture JSON: ``{"name": "conv", "input_shape": [3, 32, 32], "channels": [32, 64, 128],
"latent_dim": 64, "activation": "relu", "likelihood": "bernoulli"}``; H and W must be divisible
by 2^len(channels). Input float32 in [0, 1], shape (B, C, H, W) (a flattened (B, C·H·W) batch is
reshaped). Tensors, with n = len(channels) and (h, w) = (H, W) / 2^n:

- ``encoder.{j}.weight|bias``, j = 0 … n−1: Conv2d(k=4, stride 2, padding 1), channels C → channels[0] → …;
- ``encoder.{n}.weight|bias``: Linear(channels[-1]·h·w → 2·d), μ then log σ² (as ``mlp``);
- ``decoder.0.weight|bias``: Linear(d → channels[-1]·h·w), reshaped to (channels[-1], h, w);
- ``decoder.{j}.weight|bias``, j = 1 … n: ConvTranspose2d(k=4, stride 2, padding 1), channels
  reversed, the last to C: logits (bernoulli) or means (gaussian) of the image.

The activation follows every layer but the encoder's and the decoder's last; flattening follows
PyTorch's C-order (channel, row, column).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import AuditInputError
from .base import ACTIVATIONS, LIKELIHOODS, ReferenceVAE, arch_choice, arch_field, arch_input_shape

KERNEL, STRIDE, PADDING = 4, 2, 1


class ConvVAE(ReferenceVAE):
    def __init__(self, input_shape, channels, latent_dim, activation="relu", likelihood="bernoulli"):
        super().__init__(input_shape, latent_dim, activation, likelihood)
        C, H, W = self.input_shape
        n = len(channels)
        self._grid = (channels[-1], H >> n, W >> n)
        flat = math.prod(self._grid)
        convs = [nn.Conv2d(a, b, KERNEL, STRIDE, PADDING) for a, b in zip([C, *channels[:-1]], channels)]
        self.encoder = nn.ModuleList([*convs, nn.Linear(flat, 2 * latent_dim)])
        back = list(reversed(channels))
        deconvs = [nn.ConvTranspose2d(a, b, KERNEL, STRIDE, PADDING) for a, b in zip(back, [*back[1:], C])]
        self.decoder = nn.ModuleList([nn.Linear(latent_dim, flat), *deconvs])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.reshape(x.shape[0], *self.input_shape)
        for conv in self.encoder[:-1]:
            h = self._act(conv(h))
        h = self.encoder[-1](h.flatten(1))
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self._act(self.decoder[0](z)).reshape(z.shape[0], *self._grid)
        for j, deconv in enumerate(self.decoder[1:], start=1):
            h = deconv(h)
            if j < len(self.decoder) - 1:
                h = self._act(h)
        return h


def build_conv(arch: dict, where: str) -> ConvVAE:
    shape = arch_input_shape(arch, where)
    channels = arch_field(arch, "channels", list, where)
    if len(shape) != 3:
        raise AuditInputError(f"{where}: conv architecture needs input_shape [C, H, W], got {shape}")
    scale = 2 ** len(channels)
    if shape[1] % scale or shape[2] % scale:
        raise AuditInputError(
            f"{where}: conv architecture with {len(channels)} stride-2 layers needs H and W divisible by {scale}, got {shape[1:]}"
        )
    return ConvVAE(
        input_shape=shape,
        channels=channels,
        latent_dim=arch_field(arch, "latent_dim", int, where),
        activation=arch_choice(arch, "activation", ACTIVATIONS, "relu", where),
        likelihood=arch_choice(arch, "likelihood", LIKELIHOODS, "bernoulli", where),
    )
