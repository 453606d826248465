"""Every hyper-parameter of one training run, its defaults, and the checks that they fit together.

:func:`resolve_config` fills what was left open — from the defaults, the method, the protocol or
an ``--init`` checkpoint — and refuses combinations that would be silently ignored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from ..errors import AuditInputError
from ..sources.checkpoint import Checkpoint
from .device import check_precision, training_device
from .methods.registry import METHODS, get_method
from .protocols import get_protocol

DEFAULT_LATENT_DIM = 16
DEFAULT_HIDDEN = (128,)
DEFAULT_CHANNELS = (32, 64, 128)
DEFAULT_BETA = 2.0
DEFAULT_ALIGN_WEIGHT = 10.0


@dataclass
class TrainConfig:
    """Every hyper-parameter of one training run; recorded whole in the checkpoint's provenance.

    ``latent_dim``, ``hidden``, ``channels``, ``arch`` and ``beta`` left at None take the defaults,
    or, with ``--init``, the checkpoint's values (and must match them when given).
    """

    method: str | None = None
    seed: int = 0
    epochs: int = 60
    batch_size: int = 128
    lr: float = 2e-3
    kl_weight: float | None = None  # None: 1, or the protocol's default (collapse: 8)
    align_weight: float | None = None  # None: DEFAULT_ALIGN_WEIGHT for methods that align
    beta: float | None = None
    latent_dim: int | None = None
    hidden: tuple[int, ...] | None = None
    arch: str | None = None  # "mlp" or "conv"
    channels: tuple[int, ...] | None = None
    activation: str = "relu"
    likelihood: str = "bernoulli"
    free_bits: float = 0.25
    anneal_epochs: float = 10.0
    cycles: int = 4
    cycle_ratio: float = 0.5
    prefit_epochs: int = 10
    protocol: str | None = None
    threads: int = 1  # intra-op threads while training (see auditor.training.device.deterministic)
    device: str = "auto"  # auto, cpu or cuda; resolved to the device type that runs
    precision: str = "fp32"  # fp32 or bf16 (autocast of the model's forward passes)
    extra: dict = field(default_factory=dict)

    def architecture(self, input_shape: tuple[int, ...]) -> dict:
        """The ``vae_audit.architecture`` JSON of a fresh model for samples of ``input_shape``."""
        if self.arch not in ("mlp", "conv"):
            raise AuditInputError(f"unknown --arch {self.arch!r} (the trainer builds: mlp, conv)")
        common = {
            "input_shape": list(input_shape),
            "latent_dim": self.latent_dim,
            "activation": self.activation,
            "likelihood": self.likelihood,
        }
        # resolve_config gives a conv architecture its channels and an mlp its hidden sizes.
        if self.arch == "conv":
            assert self.channels is not None
            return {"name": "conv", "channels": list(self.channels), **common}
        assert self.hidden is not None
        return {"name": "mlp", "hidden": list(self.hidden), **common}

    def provenance(self) -> dict:
        values = asdict(self)
        for key in ("hidden", "channels"):
            values[key] = list(values[key]) if values[key] is not None else None
        return values


def _check_positive(cfg: TrainConfig) -> None:
    for name, flag in (("epochs", "--epochs"), ("batch_size", "--batch-size"), ("threads", "--threads")):
        value = getattr(cfg, name)
        if not (isinstance(value, int) and value >= 1):
            raise AuditInputError(f"{flag} must be a positive integer, got {value}")
    for name, flag in (("lr", "--lr"), ("beta", "--beta")):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise AuditInputError(f"{flag} must be a finite number > 0, got {value}")
    for name, flag in (("kl_weight", "--kl-weight"), ("align_weight", "--align-weight")):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise AuditInputError(f"{flag} must be a finite number >= 0, got {value}")
    if cfg.prefit_epochs < 0:
        raise AuditInputError(f"--prefit-epochs must be >= 0, got {cfg.prefit_epochs}")


def resolve_config(cfg: TrainConfig, init: Checkpoint | None) -> TrainConfig:
    """Fill defaults (or the --init checkpoint's architecture and β) and check everything fits."""
    _check_positive(cfg)
    cfg = replace(cfg, device=training_device(cfg.device).type, precision=check_precision(cfg.precision))
    protocol = get_protocol(cfg.protocol)
    if protocol is not None and init is None:
        raise AuditInputError(f"--protocol {protocol.name} continues a trained model: give --init CHECKPOINT")
    method_name = cfg.method or (protocol.default_method if protocol else None)
    if method_name is None:
        raise AuditInputError("give --method (vanilla, aligned, prefit, beta, free-bits, kl-anneal, cyclical, ...)")
    method = get_method(method_name)
    if protocol is not None and method.uses_alignment != protocol.alignment:
        need = "uses" if protocol.alignment else "does not use"
        raise AuditInputError(
            f"--protocol {protocol.name} needs a method that {need} the witness alignment, not {method_name!r}"
        )
    if cfg.align_weight is not None and cfg.align_weight > 0 and not method.uses_alignment:
        aligned = ", ".join(name for name, m in METHODS.items() if m.uses_alignment)
        raise AuditInputError(
            f"--method {method_name} does not use the witness alignment, so --align-weight would be "
            f"ignored; choose an aligned method ({aligned})"
        )
    kl_weight = cfg.kl_weight if cfg.kl_weight is not None else (protocol.default_kl_weight if protocol else 1.0)
    align_weight = cfg.align_weight if cfg.align_weight is not None else DEFAULT_ALIGN_WEIGHT
    resolved = replace(cfg, method=method_name, kl_weight=kl_weight, align_weight=align_weight)
    if init is not None:
        resolved = _settings_from_checkpoint(resolved, init)
    else:
        resolved = replace(
            resolved,
            arch=cfg.arch or "mlp",
            beta=cfg.beta if cfg.beta is not None else DEFAULT_BETA,
            latent_dim=cfg.latent_dim or DEFAULT_LATENT_DIM,
            hidden=tuple(cfg.hidden) if cfg.hidden else (DEFAULT_HIDDEN if (cfg.arch or "mlp") == "mlp" else None),
            channels=tuple(cfg.channels) if cfg.channels else (DEFAULT_CHANNELS if cfg.arch == "conv" else None),
        )
    method.check(resolved)
    return resolved


def _settings_from_checkpoint(cfg: TrainConfig, init: Checkpoint) -> TrainConfig:
    arch, where = init.architecture, f"--init {init.path}"
    from_ckpt = {
        "arch": arch.get("name"),
        "latent_dim": arch.get("latent_dim"),
        "beta": init.witness["beta"],
        "hidden": tuple(arch["hidden"]) if "hidden" in arch else None,
        "channels": tuple(arch["channels"]) if "channels" in arch else None,
    }
    for key, flag in (
        ("arch", "--arch"),
        ("latent_dim", "--latent-dim"),
        ("hidden", "--hidden"),
        ("channels", "--channels"),
        ("beta", "--beta"),
    ):
        asked = getattr(cfg, key)
        if asked is not None and (tuple(asked) if isinstance(asked, (list, tuple)) else asked) != from_ckpt[key]:
            raise AuditInputError(
                f"{where} has {key} {from_ckpt[key]!r} but {flag} asks for {asked!r}: "
                "the architecture and witness of a resumed model must match"
            )
    return replace(
        cfg,
        activation=arch.get("activation", cfg.activation),
        likelihood=arch.get("likelihood", cfg.likelihood),
        **from_ckpt,
    )
