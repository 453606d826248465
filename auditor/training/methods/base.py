"""What a training method is: the hooks the trainer calls each batch, on top of the plain ELBO.

The training loop (:mod:`auditor.training.trainer`) asks a :class:`Method`, batch by batch, for

- ``kl_weight(cfg, t)``       — the weight on the KL term at training time ``t`` (in epochs since
                                the ELBO phase began; fractional, so schedules move every step);
- ``kl_penalty(kl_dim, cfg)`` — the KL term from the per-dimension batch-mean KL (d,);
- ``align_weight(cfg, t)``    — α on the raw witness alignment loss KL(p‖softmax(βSᵀμ)) (0: none);
- ``prefit_epochs(cfg)``      — epochs of regressing μ onto the analytic code μ*(p) first;
- ``extra_loss(step)``        — any further term (``None`` for none), given a :class:`Step`;
- ``architecture(cfg, input_shape)`` — the ``vae_audit.architecture`` JSON of a fresh model.

The base class itself is ``vanilla``. **Extension point:** a new method is a subclass that
overrides what differs, added to the registry with
:func:`auditor.training.methods.registry.register_method` — nothing else in the trainer, the CLI
or ``audit reproduce`` changes (the CLI lists the registry for ``--method``). Hyper-parameters a
new method needs go into :attr:`TrainConfig.extra <auditor.training.config.TrainConfig.extra>`
(a dict recorded in the provenance). The decoder likelihood comes from the model
(``model.likelihood``) through :func:`auditor.nets.likelihood.reconstruction_nll`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..config import TrainConfig


@dataclass
class Step:
    """What a method may look at for one batch (for :meth:`Method.extra_loss`)."""

    model: torch.nn.Module
    x: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    p: torch.Tensor
    cfg: TrainConfig
    t: float  # epochs since the ELBO phase began


class Method:
    """The ELBO with a KL weight: the base every method modifies (this is ``vanilla``)."""

    name = "vanilla"
    summary = "the ELBO, KL weight --kl-weight (default 1)"
    uses_alignment = False

    def kl_weight(self, cfg: TrainConfig, t: float) -> float:
        assert cfg.kl_weight is not None  # resolve_config fills it
        return cfg.kl_weight

    def kl_penalty(self, kl_dim: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        return kl_dim.sum()

    def align_weight(self, cfg: TrainConfig, t: float) -> float:
        if not self.uses_alignment:
            return 0.0
        assert cfg.align_weight is not None  # resolve_config fills it
        return cfg.align_weight

    def prefit_epochs(self, cfg: TrainConfig) -> int:
        return 0

    def extra_loss(self, step: Step) -> torch.Tensor | None:
        return None

    def architecture(self, cfg: TrainConfig, input_shape: tuple[int, ...]) -> dict:
        return cfg.architecture(input_shape)

    def check(self, cfg: TrainConfig) -> None:
        """Raise AuditInputError for hyper-parameters this method cannot use."""
