"""The loss terms the trainer combines, shared with anyone training against the witness."""

from __future__ import annotations

import torch

from ..certificate.witness import witness_logits


def alignment_loss(mu: torch.Tensor, p: torch.Tensor, S: torch.Tensor, beta: float) -> torch.Tensor:
    """Batch mean of the raw witness loss KL(p_i ‖ softmax(β Sᵀμ_i)), in S's dtype (differentiable in μ)."""
    logq = torch.log_softmax(witness_logits(mu, S, beta), dim=1)
    p = p.to(S.dtype)
    return (torch.special.xlogy(p, p) - p * logq).sum(dim=1).mean()


def prior_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent dimension, averaged over the batch: shape (d,)."""
    return (0.5 * (mu * mu + logvar.exp() - logvar - 1)).mean(dim=0)
