"""Methods that cure collapse through the model family rather than the loss: ``lidvae``, ``const-var``.

Both train the plain ELBO (the loop's reconstruction under the model's likelihood plus the KL of
the model's own (μ, log σ²)); what changes is the architecture each method builds:

- ``lidvae`` — the ``lidvae`` architecture (:mod:`auditor.nets.lidvae`): the ``mlp`` encoder and the
  injective decoder g₂ ∘ B ∘ g₁ of Wang, Blei & Cunningham (2021);
- ``const-var`` — the ``const-var`` architecture (:mod:`auditor.nets.constvar`): a means-only encoder
  with one learned posterior variance shared by every sample (so the KL uses that σ²), and a
  gaussian (unit-variance) decoder, after Fyffe (2021).

``lidvae-aligned`` and ``const-var-aligned`` add α·(raw witness alignment loss) with α =
``--align-weight``, exactly as ``aligned`` does for ``mlp``: the witness reads only μ, so it is
orthogonal to the decoder family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import AuditInputError
from ...nets.constvar import POSTERIOR_VARIANCE
from ...nets.lidvae import DEFAULTS as LIDVAE_DEFAULTS
from .base import Method

if TYPE_CHECKING:
    from ..config import TrainConfig


class _OwnArchitecture(Method):
    """A method whose architecture replaces the ``mlp`` one (same hidden sizes, d, activation)."""

    arch_name = ""

    def check(self, cfg: TrainConfig) -> None:
        if cfg.arch not in (None, "mlp", self.arch_name):
            raise AuditInputError(
                f"--method {self.name} builds its own {self.arch_name!r} architecture "
                f"(an mlp encoder); drop --arch {cfg.arch}"
            )
        if cfg.hidden is None:
            raise AuditInputError(f"--method {self.name} needs --hidden sizes for its mlp encoder")

    def fields(self, cfg: TrainConfig) -> dict:
        return {}

    def architecture(self, cfg: TrainConfig, input_shape: tuple[int, ...]) -> dict:
        assert cfg.hidden is not None  # check() refused a config without hidden sizes
        return {
            "name": self.arch_name,
            "input_shape": list(input_shape),
            "hidden": list(cfg.hidden),
            "latent_dim": cfg.latent_dim,
            "activation": cfg.activation,
            **self.fields(cfg),
        }


class LIDVAEMethod(_OwnArchitecture):
    name = "lidvae"
    arch_name = "lidvae"
    summary = "the ELBO with the latent-identifiable decoder g₂∘B∘g₁ (ICNN gradients; Wang et al. 2021)"

    def fields(self, cfg: TrainConfig) -> dict:
        # The decoder's hyper-parameters (README) may come through TrainConfig.extra; the
        # architecture builder checks them.
        return {
            "likelihood": cfg.likelihood,
            **LIDVAE_DEFAULTS,
            **{k: cfg.extra[k] for k in LIDVAE_DEFAULTS if k in cfg.extra},
        }


class LIDVAEAligned(LIDVAEMethod):
    name = "lidvae-aligned"
    summary = "lidvae + α·KL(p‖softmax(βSᵀμ)), the raw witness alignment (--align-weight)"
    uses_alignment = True


class ConstVarMethod(_OwnArchitecture):
    name = "const-var"
    arch_name = "const-var"
    summary = "the ELBO with means-only encoder, one shared learned posterior variance, gaussian decoder (Fyffe 2021)"

    def fields(self, cfg: TrainConfig) -> dict:
        return {"likelihood": "gaussian", "posterior_variance": POSTERIOR_VARIANCE}


class ConstVarAligned(ConstVarMethod):
    name = "const-var-aligned"
    summary = "const-var + α·KL(p‖softmax(βSᵀμ)), the raw witness alignment (--align-weight)"
    uses_alignment = True
