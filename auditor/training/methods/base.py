"""Training methods and protocols of ``audit train``: what each one adds to the loss, in one place.

A method is a :class:`Method` object in the :data:`METHODS` registry. The training loop
(:mod:`auditor.train`) asks it, batch by batch, for

- ``kl_weight(cfg, t)``       — the weight on the KL term at training time ``t`` (in epochs since
                                the ELBO phase began; fractional, so schedules move every step);
- ``kl_penalty(kl_dim, cfg)`` — the KL term from the per-dimension batch-mean KL (d,);
- ``align_weight(cfg, t)``    — α on the raw witness alignment loss KL(p‖softmax(βSᵀμ)) (0: none);
- ``prefit_epochs(cfg)``      — epochs of regressing μ onto the analytic code μ*(p) first;
- ``extra_loss(step)``        — any further term (``None`` for none), given a :class:`Step`;
- ``architecture(cfg, input_shape)`` — the ``vae_audit.architecture`` JSON of a fresh model.

**Extension point.** A new method is a subclass of :class:`Method` that overrides what differs,
decorated with :func:`register_method` — nothing else in the trainer, the CLI or ``audit
reproduce`` changes (the CLI lists ``METHODS`` for ``--method``). Hyper-parameters a new method
needs go into :class:`~auditor.train.TrainConfig.extra` (a dict recorded in the provenance).

Protocols (``--protocol``) continue a checkpoint given with ``--init`` and stop at the first
epoch whose training-data monitor says they are done: ``collapse`` (alignment off, strong KL)
stops once the margin is in the constant regime Ĝ ≤ 0; ``rescue`` (alignment on) stops once the
certificate is restored (LCB at 95 % ≥ 0). The decoder likelihood comes from the model
(``model.likelihood``: bernoulli or gaussian) through :func:`reconstruction_nll`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch.nn import functional as F

from ...certificate.state import CertificateNumbers, decide
from ...errors import AuditInputError
from ...certificate.witness import witness_logits

if TYPE_CHECKING:
    from ..trainer import TrainConfig

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def reconstruction_nll(model: torch.nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-sample −log p(x|z) in nats under the model's likelihood (bernoulli, or unit-variance gaussian)."""
    out = model.decode(z).reshape(x.shape[0], -1)
    target = x.reshape(x.shape[0], -1)
    likelihood = getattr(model, "likelihood", "bernoulli")
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(dim=1)
    if likelihood == "gaussian":
        return (0.5 * (out - target) ** 2 + HALF_LOG_2PI).sum(dim=1)
    raise AuditInputError(f"the trainer does not know the likelihood {likelihood!r} (known: bernoulli, gaussian)")


def alignment_loss(mu: torch.Tensor, p: torch.Tensor, S: torch.Tensor, beta: float) -> torch.Tensor:
    """Batch mean of the raw witness loss KL(p_i ‖ softmax(β Sᵀμ_i)), in S's dtype (differentiable in μ)."""
    logq = torch.log_softmax(witness_logits(mu, S, beta), dim=1)
    p = p.to(S.dtype)
    return (torch.special.xlogy(p, p) - p * logq).sum(dim=1).mean()


def prior_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent dimension, averaged over the batch: shape (d,)."""
    return (0.5 * (mu * mu + logvar.exp() - logvar - 1)).mean(dim=0)


@dataclass
class Step:
    """What a method may look at for one batch (for :meth:`Method.extra_loss`)."""

    model: torch.nn.Module
    x: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    p: torch.Tensor
    cfg: "TrainConfig"
    t: float  # epochs since the ELBO phase began


class Method:
    """The ELBO with a KL weight: the base every method modifies (this is ``vanilla``)."""

    name = "vanilla"
    summary = "the ELBO, KL weight --kl-weight (default 1)"
    uses_alignment = False

    def kl_weight(self, cfg: "TrainConfig", t: float) -> float:
        return cfg.kl_weight

    def kl_penalty(self, kl_dim: torch.Tensor, cfg: "TrainConfig") -> torch.Tensor:
        return kl_dim.sum()

    def align_weight(self, cfg: "TrainConfig", t: float) -> float:
        return cfg.align_weight if self.uses_alignment else 0.0

    def prefit_epochs(self, cfg: "TrainConfig") -> int:
        return 0

    def extra_loss(self, step: Step) -> torch.Tensor | None:
        return None

    def architecture(self, cfg: "TrainConfig", input_shape: tuple[int, ...]) -> dict:
        return cfg.architecture(input_shape)

    def check(self, cfg: "TrainConfig") -> None:
        """Raise AuditInputError for hyper-parameters this method cannot use."""


METHODS: dict[str, Method] = {}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise AuditInputError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]


register_method(Method)


@register_method
class Aligned(Method):
    name = "aligned"
    summary = "ELBO + α·KL(p‖softmax(βSᵀμ)), the raw witness alignment against the fixed teacher"
    uses_alignment = True


@register_method
class Prefit(Aligned):
    name = "prefit"
    summary = "regress μ onto the analytic code μ*(p) for --prefit-epochs, then train as aligned"

    def prefit_epochs(self, cfg: "TrainConfig") -> int:
        return cfg.prefit_epochs


@register_method
class Beta(Method):
    name = "beta"
    summary = "β-VAE: the ELBO with any KL weight (--kl-weight)"


@register_method
class FreeBits(Method):
    name = "free-bits"
    summary = "KL per dimension floored at λ = --free-bits nats (Kingma et al. 2016)"

    def kl_penalty(self, kl_dim: torch.Tensor, cfg: "TrainConfig") -> torch.Tensor:
        return kl_dim.clamp(min=cfg.free_bits).sum()

    def check(self, cfg: "TrainConfig") -> None:
        if not (math.isfinite(cfg.free_bits) and cfg.free_bits >= 0):
            raise AuditInputError(f"--free-bits must be a finite number >= 0, got {cfg.free_bits}")


@register_method
class KLAnneal(Method):
    name = "kl-anneal"
    summary = "KL weight warmed up linearly from 0 over --anneal-epochs (Bowman et al. 2016)"

    def kl_weight(self, cfg: "TrainConfig", t: float) -> float:
        return cfg.kl_weight * min(1.0, t / cfg.anneal_epochs)

    def check(self, cfg: "TrainConfig") -> None:
        if not cfg.anneal_epochs > 0:
            raise AuditInputError(f"--anneal-epochs must be > 0, got {cfg.anneal_epochs}")


@register_method
class Cyclical(Method):
    name = "cyclical"
    summary = "cyclical KL schedule (Fu et al. 2019): --cycles M, each rising linearly over ratio R, then flat"

    def kl_weight(self, cfg: "TrainConfig", t: float) -> float:
        period = cfg.epochs / cfg.cycles
        tau = (t % period) / period
        return cfg.kl_weight * min(1.0, tau / cfg.cycle_ratio)

    def check(self, cfg: "TrainConfig") -> None:
        if cfg.cycles < 1:
            raise AuditInputError(f"--cycles must be >= 1, got {cfg.cycles}")
        if not 0 < cfg.cycle_ratio <= 1:
            raise AuditInputError(f"--cycle-ratio must be in (0, 1], got {cfg.cycle_ratio}")


# --------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    alignment: bool  # whether the method it runs must use the witness alignment
    default_method: str
    default_kl_weight: float
    done: Callable[[CertificateNumbers], bool]  # from the training-data monitor, after an epoch


PROTOCOLS: dict[str, Protocol] = {
    "collapse": Protocol(
        "collapse", "continue a certified model without alignment and with a strong KL weight "
        "until the margin reaches the constant regime (Ĝ ≤ 0 on the training data)",
        alignment=False, default_method="vanilla", default_kl_weight=8.0,
        done=lambda numbers: numbers.margin <= 0.0,
    ),
    "rescue": Protocol(
        "rescue", "restart from a collapsed model with alignment on until the certificate is "
        "restored (LCB at 95 % ≥ 0 on the training data)",
        alignment=True, default_method="aligned", default_kl_weight=1.0,
        done=lambda numbers: decide(numbers, 0.95, 0.0).certified,
    ),
}


def get_protocol(name: str | None) -> Protocol | None:
    if name is None:
        return None
    if name not in PROTOCOLS:
        raise AuditInputError(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]


# Methods kept in their own modules register themselves into METHODS when imported; imported
# last because they subclass Method.
from . import decoders as train_methods_decoders  # noqa: E402,F401
