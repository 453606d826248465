"""Methods that change only the ELBO's KL term: a fixed weight, free bits, annealing, cycles."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ...errors import AuditInputError
from .base import Method

if TYPE_CHECKING:
    from ..config import TrainConfig


class Beta(Method):
    name = "beta"
    summary = "β-VAE: the ELBO with any KL weight (--kl-weight)"


class FreeBits(Method):
    name = "free-bits"
    summary = "KL per dimension floored at λ = --free-bits nats (Kingma et al. 2016)"

    def kl_penalty(self, kl_dim: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        return kl_dim.clamp(min=cfg.free_bits).sum()

    def check(self, cfg: TrainConfig) -> None:
        if not (math.isfinite(cfg.free_bits) and cfg.free_bits >= 0):
            raise AuditInputError(f"--free-bits must be a finite number >= 0, got {cfg.free_bits}")


class KLAnneal(Method):
    name = "kl-anneal"
    summary = "KL weight warmed up linearly from 0 over --anneal-epochs (Bowman et al. 2016)"

    def kl_weight(self, cfg: TrainConfig, t: float) -> float:
        assert cfg.kl_weight is not None  # resolve_config fills it
        return cfg.kl_weight * min(1.0, t / cfg.anneal_epochs)

    def check(self, cfg: TrainConfig) -> None:
        if not cfg.anneal_epochs > 0:
            raise AuditInputError(f"--anneal-epochs must be > 0, got {cfg.anneal_epochs}")


class Cyclical(Method):
    name = "cyclical"
    summary = "cyclical KL schedule (Fu et al. 2019): --cycles M, each rising linearly over ratio R, then flat"

    def kl_weight(self, cfg: TrainConfig, t: float) -> float:
        period = cfg.epochs / cfg.cycles
        tau = (t % period) / period
        assert cfg.kl_weight is not None  # resolve_config fills it
        return cfg.kl_weight * min(1.0, tau / cfg.cycle_ratio)

    def check(self, cfg: TrainConfig) -> None:
        if cfg.cycles < 1:
            raise AuditInputError(f"--cycles must be >= 1, got {cfg.cycles}")
        if not 0 < cfg.cycle_ratio <= 1:
            raise AuditInputError(f"--cycle-ratio must be in (0, 1], got {cfg.cycle_ratio}")
