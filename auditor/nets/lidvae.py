"""``lidvae``: the latent-identifiable VAE decoder of Wang, Blei & Cunningham (NeurIPS 2021).

Decoder output (logits or means) = g₂(B(g₁(z))), where g₁ = ∇ψ₁ on the latent space and
g₂ = ∇ψ₂ on the data space are gradients of input-convex neural networks (ICNNs) with a
strongly convex term α‖y‖²/2, and B = U diag(s) Vᵀ is a full-rank latent→data linear map whose
singular values s stay in [s_min, s_max]. ∇ of a strongly convex function is strongly monotone,
hence injective; B is injective because D ≥ d and s > 0; so z ↦ decoder(z) is injective, which
is what makes the latent identifiable (the likelihood cannot ignore z).

The encoder is the ``mlp`` encoder (tensors ``encoder.{j}.*``). Decoder tensors:
``decoder.g1.*`` / ``decoder.g2.*`` (one :class:`ICNN` each) and ``decoder.B.{u_raw,v_raw,s_raw}``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..certificate.json_input import is_positive_finite
from ..errors import AuditInputError, shown
from .base import ACTIVATIONS, LIKELIHOODS, arch_choice, arch_field, arch_input_shape
from .mlp import MLPVAE

NEGATIVE_SLOPE = 0.2
DEFAULTS: dict[str, Any] = {"icnn_hidden": [64, 64], "convexity": 0.1, "singular_values": [0.25, 4.0]}


def _inverse_softplus(w: torch.Tensor) -> torch.Tensor:
    return w + torch.log(-torch.expm1(-w))


class ICNN(nn.Module):
    """ψ(y) = h_L + α‖y‖²/2, an input-convex network with a scalar output.

    h₀ = LeakyReLU(A₀y + b₀)², h_{l+1} = LeakyReLU(W_l h_l + A_{l+1} y + b_{l+1}) for the hidden
    layers and a linear last layer (width 1). W_l = softplus(``W_raw.{l}``) ≥ 0. Convex because
    LeakyReLU(·)² is convex, LeakyReLU is convex and non-decreasing, and non-negative sums of
    convex functions plus affine terms stay convex. Tensors: ``A.{l}.weight`` (l = 0..L) and
    ``A.{l}.bias`` (l = 0..L−1), the affine terms in y, and ``W_raw.{l}`` (l = 0..L−1).
    """

    def __init__(self, dim: int, hidden: list[int], convexity: float):
        super().__init__()
        widths = [*hidden, 1]
        self.convexity = float(convexity)
        # The last affine term's bias would be a constant in ψ, invisible in ∇ψ: it has none.
        self.A = nn.ModuleList(nn.Linear(dim, m, bias=layer < len(hidden)) for layer, m in enumerate(widths))
        raws = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            # Small positive initial weights, so that the composition starts near the quadratic.
            w0 = torch.rand(fan_out, fan_in) * (1.0 / fan_in) + 1e-3
            raws.append(nn.Parameter(_inverse_softplus(w0)))
        self.W_raw = nn.ParameterList(raws)

    def potential(self, y: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.A[0](y), NEGATIVE_SLOPE) ** 2
        for layer, raw in enumerate(self.W_raw):
            h = h @ F.softplus(raw).T + self.A[layer + 1](y)
            if layer < len(self.W_raw) - 1:
                h = F.leaky_relu(h, NEGATIVE_SLOPE)
        return h.squeeze(-1) + 0.5 * self.convexity * (y * y).sum(dim=-1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """∇ψ(y), row by row; differentiable (create_graph) whenever gradients are being recorded."""
        record = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        # ∇ψ needs autograd even under no_grad or inference_mode; an inference tensor is cloned
        # outside inference mode first, since autograd cannot save it.
        with torch.inference_mode(False), torch.enable_grad():
            y = y.clone() if y.is_inference() else y
            leaf = y if y.requires_grad else y.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.potential(leaf).sum(), leaf, create_graph=record)
        return grad if record else grad.detach()


def orthonormal_columns(raw: torch.Tensor) -> torch.Tensor:
    """The Q factor of raw = QR with the signs fixed so that diag(R) > 0 (unique, differentiable)."""
    q, r = torch.linalg.qr(raw, mode="reduced")
    signs = torch.sign(torch.diagonal(r))
    return q * torch.where(signs == 0, torch.ones_like(signs), signs)


class BoundedLinear(nn.Module):
    """B = U diag(s) Vᵀ (D×d), U = orth(``u_raw``), V = orth(``v_raw``), s = s_min + (s_max − s_min)·sigmoid(``s_raw``)."""

    def __init__(self, latent_dim: int, data_dim: int, s_min: float, s_max: float):
        super().__init__()
        self.s_min, self.s_max = float(s_min), float(s_max)
        self.u_raw = nn.Parameter(torch.randn(data_dim, latent_dim))
        self.v_raw = nn.Parameter(torch.randn(latent_dim, latent_dim))
        self.s_raw = nn.Parameter(torch.zeros(latent_dim))

    def singular_values(self) -> torch.Tensor:
        return self.s_min + (self.s_max - self.s_min) * torch.sigmoid(self.s_raw)

    def matrix(self) -> torch.Tensor:
        return orthonormal_columns(self.u_raw) * self.singular_values() @ orthonormal_columns(self.v_raw).T

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.matrix().T


class LIDDecoder(nn.Module):
    def __init__(self, latent_dim: int, data_dim: int, icnn_hidden: list[int], convexity: float, singular_values):
        super().__init__()
        self.g1 = ICNN(latent_dim, icnn_hidden, convexity)
        self.B = BoundedLinear(latent_dim, data_dim, *singular_values)
        self.g2 = ICNN(data_dim, icnn_hidden, convexity)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.g2(self.B(self.g1(z)))


class LIDVAE(MLPVAE):
    """The ``mlp`` encoder with the injective decoder g₂ ∘ B ∘ g₁ (see module docstring)."""

    def __init__(
        self,
        input_shape,
        hidden,
        latent_dim,
        activation="relu",
        likelihood="bernoulli",
        icnn_hidden=tuple(DEFAULTS["icnn_hidden"]),
        convexity=DEFAULTS["convexity"],
        singular_values=tuple(DEFAULTS["singular_values"]),
    ):
        super().__init__(input_shape, hidden, latent_dim, activation, likelihood)
        self.decoder = LIDDecoder(
            latent_dim, math.prod(self.input_shape), list(icnn_hidden), convexity, singular_values
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(z.shape[0], *self.input_shape)


def _positive_number(arch: dict, key: str, where: str) -> float:
    value = arch.get(key, DEFAULTS[key])
    if not is_positive_finite(value):
        raise AuditInputError(f"{where}: architecture {key!r} must be a positive number, got {shown(value)}")
    return float(value)


def build_lidvae(arch: dict, where: str) -> LIDVAE:
    shape = arch_input_shape(arch, where)
    latent_dim = arch_field(arch, "latent_dim", int, where)
    icnn_hidden = arch_field({"icnn_hidden": DEFAULTS["icnn_hidden"], **arch}, "icnn_hidden", list, where)
    bounds = arch.get("singular_values", DEFAULTS["singular_values"])
    if not (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
        and 0 < bounds[0] < bounds[1] <= sys.float_info.max
    ):
        raise AuditInputError(
            f"{where}: architecture 'singular_values' must be [s_min, s_max] with 0 < s_min < s_max, got {shown(bounds)}"
        )
    if math.prod(shape) < latent_dim:
        raise AuditInputError(
            f"{where}: lidvae needs latent_dim ({latent_dim}) <= input size ({math.prod(shape)}) so that B is injective"
        )
    return LIDVAE(
        input_shape=shape,
        hidden=arch_field(arch, "hidden", list, where),
        latent_dim=latent_dim,
        activation=arch_choice(arch, "activation", ACTIVATIONS, "relu", where),
        likelihood=arch_choice(arch, "likelihood", LIKELIHOODS, "bernoulli", where),
        icnn_hidden=icnn_hidden,
        convexity=_positive_number(arch, "convexity", where),
        singular_values=[float(b) for b in bounds],
    )
