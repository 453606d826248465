"""The certificate during training: feed each batch, read the numbers once per epoch.

A thin wrapper on :class:`~auditor.certificate.state.CertificateState` — the same streaming float64
state, the same formulas as ``audit certify`` — for any PyTorch loop::

    monitor = CertificateMonitor(num_classes=10, latent_dim=16, beta=2.0)
    for x in loader:
        mu, logvar = model.encode(x)
        monitor.update(mu, teacher(x), logvar)   # detached; no effect on gradients
    numbers = monitor.compute()                 # margin, teacher_information, escape_force, … then reset

Under torch.distributed (DDP, torchrun) :meth:`compute` first combines every rank's state, so
each rank reads the numbers of the whole epoch.
"""

from __future__ import annotations

import torch

from ..certificate.state import CertificateState
from ..certificate.witness import WitnessSpec


class CertificateMonitor:
    def __init__(
        self, num_classes: int, latent_dim: int, beta: float, offset: int = 0, device: str | torch.device = "cpu"
    ):
        self.spec = WitnessSpec(num_classes, latent_dim, float(beta), offset)
        self.state = CertificateState(self.spec, with_view=False, device=device)

    def update(self, mu: torch.Tensor, teacher_probs: torch.Tensor, logvar: torch.Tensor | None = None) -> None:
        """Add one batch: latent means (B×d), teacher probabilities (B×K), optional log-variances (B×d)."""
        self.state.update(mu, teacher_probs, logvar)

    def compute(self) -> dict[str, float]:
        """The epoch's numbers, then a fresh state for the next epoch (reset even when inputs were bad).

        Keys: ``margin`` (Ĝ = I_T − L), ``teacher_information``, ``alignment_loss``, ``escape_force``,
        ``active_units``, ``witness_agreement``, ``mean_sq_norm``, ``num_samples``, and
        ``mean_prior_kl`` when log-variances were given. Bad inputs raise AuditInputError.
        """
        try:
            if _distributed():
                self.state.all_reduce()
            numbers = self.state.compute()
        finally:
            self.state.reset()
        d = numbers.diagnostics
        out = {
            "margin": numbers.margin,
            "teacher_information": numbers.teacher_information,
            "alignment_loss": numbers.alignment_loss,
            "escape_force": d["escape_force"],
            "active_units": d["active_units"],
            "witness_agreement": d["witness_agreement"],
            "mean_sq_norm": d["mean_sq_norm"],
            "num_samples": numbers.num_samples,
        }
        if d["mean_prior_kl"] is not None:
            out["mean_prior_kl"] = d["mean_prior_kl"]
        return out


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
