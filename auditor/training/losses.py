"""The loss terms the trainer combines, shared with anyone training against the witness.

:class:`AlignmentLoss` is the public piece: the raw witness alignment KL(p ‖ softmax(β Sᵀμ)) as an
``nn.Module`` for any training loop. ``audit train --method aligned`` uses this same module, so a
user's loop and the reference trainer optimise exactly one formula.
"""

from __future__ import annotations

import torch
from torch import nn

from ..certificate.witness import WitnessSpec, witness_logits, witness_matrix


def alignment_loss(mu: torch.Tensor, p: torch.Tensor, S: torch.Tensor, beta: float) -> torch.Tensor:
    """Batch mean of the raw witness loss KL(p_i ‖ softmax(β Sᵀμ_i)), in S's dtype (differentiable in μ)."""
    logq = torch.log_softmax(witness_logits(mu, S, beta), dim=1)
    p = p.to(S.dtype)
    return (torch.special.xlogy(p, p) - p * logq).sum(dim=1).mean()


class AlignmentLoss(nn.Module):
    """mean_i KL(p_i ‖ softmax(β Sᵀμ_i)): the raw witness alignment loss, with nothing learned.

    S (d×K) is rebuilt from (K, d, β, offset) exactly as ``audit certify`` rebuilds it; it is a
    buffer (moved by ``.to(device)``), never a parameter, and not saved in a state dict — the
    witness is never read from a model's tensors. ``forward(mu, teacher_probs)`` takes latent means
    (B×d) and teacher probabilities (B×K) and returns a scalar. Gradients reach μ only: the teacher
    is fixed, so its probabilities are detached. The loss is computed in μ's dtype, at least float32
    (a bf16 or fp16 μ under autocast would round the log-softmax too coarsely to train against).
    """

    S: torch.Tensor

    def __init__(self, num_classes: int, latent_dim: int, beta: float, offset: int = 0):
        super().__init__()
        self.spec = WitnessSpec(num_classes, latent_dim, float(beta), offset)  # checks K, d, β, offset
        # float64 here, cast to the loss's dtype per call: a float32 S then rounds as the trainer's always did.
        self.register_buffer("S", torch.as_tensor(witness_matrix(self.spec)), persistent=False)

    def forward(self, mu: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        K, d = self.spec.num_classes, self.spec.latent_dim
        if mu.ndim != 2 or mu.shape[1] != d:
            raise ValueError(f"AlignmentLoss: mu must have shape (batch, {d}), got {tuple(mu.shape)}")
        if tuple(teacher_probs.shape) != (mu.shape[0], K):
            raise ValueError(
                f"AlignmentLoss: teacher_probs must have shape ({mu.shape[0]}, {K}), got {tuple(teacher_probs.shape)}"
            )
        S = self.S.to(device=mu.device, dtype=torch.promote_types(mu.dtype, torch.float32))
        with torch.autocast(mu.device.type, enabled=False):  # autocast would run the matmul in half precision
            return alignment_loss(mu, teacher_probs.detach(), S, self.spec.beta)

    def extra_repr(self) -> str:
        s = self.spec
        return f"num_classes={s.num_classes}, latent_dim={s.latent_dim}, beta={s.beta:g}, offset={s.offset}"


def prior_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent dimension, averaged over the batch: shape (d,)."""
    return (0.5 * (mu * mu + logvar.exp() - logvar - 1)).mean(dim=0)
