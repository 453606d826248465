"""The canonical simplex witness (docs/mathematics.md): a fixed, parameter-free head on the latent mean.

The witness is never trained and never read from a checkpoint's tensors; it is rebuilt from
(K, d, β, offset) so that a "raw" certificate means exactly this head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import AuditInputError
from .budget import check_state_budget


@dataclass(frozen=True)
class WitnessSpec:
    num_classes: int
    latent_dim: int
    beta: float
    offset: int = 0

    def __post_init__(self) -> None:
        K, d = self.num_classes, self.latent_dim
        if K < 2:
            raise AuditInputError(f"the witness needs at least 2 classes, got K={K}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise AuditInputError(f"witness beta must be a finite number > 0, got {self.beta}")
        if self.offset < 0:
            raise AuditInputError(f"witness offset must be >= 0, got {self.offset}")
        if d < self.offset + K - 1:
            raise AuditInputError(
                f"latent dimension d={d} is too small for K={K} classes at offset {self.offset}: "
                f"the witness needs d >= offset + K - 1 = {self.offset + K - 1}"
            )
        check_state_budget(K, d)  # before the d×K witness matrix or any state is made

    def as_dict(self) -> dict:
        return asdict(self)


def simplex_vertices(num_classes: int) -> np.ndarray:
    """V, (K−1)×K: unit-norm columns of a regular simplex centred at 0, V = sqrt(K/(K−1))·Helmert."""
    K = num_classes
    H = np.zeros((K - 1, K), dtype=np.float64)
    for j in range(1, K):  # 1-based row index as in docs/mathematics.md
        norm = math.sqrt(j * (j + 1))
        H[j - 1, :j] = 1.0 / norm
        H[j - 1, j] = -j / norm
    return math.sqrt(K / (K - 1)) * H


def witness_matrix(spec: WitnessSpec) -> np.ndarray:
    """S, d×K: V placed in latent rows offset..offset+K−2, zeros elsewhere (float64)."""
    S = np.zeros((spec.latent_dim, spec.num_classes), dtype=np.float64)
    S[spec.offset : spec.offset + spec.num_classes - 1] = simplex_vertices(spec.num_classes)
    return S


def witness_logits(mu: torch.Tensor, S: torch.Tensor, beta: float) -> torch.Tensor:
    """z = β·Sᵀμ for a batch of latent means (N×d) → N×K, in S's dtype."""
    return beta * (mu.to(S.dtype) @ S)


def centered_log(p: np.ndarray) -> np.ndarray:
    """ℓ(p) = log p − mean_k log p_k for full-support p (rows)."""
    logp = np.log(p)
    return logp - logp.mean(axis=-1, keepdims=True)


def analytic_code(p: np.ndarray, spec: WitnessSpec) -> np.ndarray:
    """μ*(p) = ((K−1)/(Kβ))·S ℓ(p): the latent means whose witness prediction is exactly p."""
    K = spec.num_classes
    return ((K - 1) / (K * spec.beta)) * centered_log(p) @ witness_matrix(spec).T


def analytic_energy(mean_sq_centered_log: float, num_classes: int, beta: float) -> float:
    """E‖μ*‖² = ((K−1)/(Kβ²))·E_T, where E_T is the mean of ‖ℓ(p_i)‖²."""
    K = num_classes
    # Divided by β twice rather than by β²: for β below 1e-154, β² is 0 and the energy is
    # inf (refused as an overflow), not a ZeroDivisionError.
    return (K - 1) / K * mean_sq_centered_log / beta / beta
