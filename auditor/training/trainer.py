"""The reference trainer's loop: a VAE on in-memory samples, against fixed teacher probabilities.

:func:`train_model` takes tensors and returns the model and its per-epoch history;
:mod:`auditor.training.run` reads the files and writes the checkpoint around it. What each method
adds to the loss lives in :mod:`auditor.training.methods` (the extension point).
The per-epoch monitor is the certificate state itself (:class:`~auditor.certificate.state.CertificateState`
over the training data with eval-mode means), so the CSV's margin is the number ``audit certify``
would give on that split.

Determinism: every random draw (initialisation, batch order, reparameterisation noise) comes from
generators seeded by ``--seed``; the global RNG is forked around initialisation and left as it
was. Same seed, data, teacher and machine → the same checkpoint bytes on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from ..certificate.numbers import CertificateNumbers
from ..certificate.state import CertificateState
from ..certificate.verdict import decide
from ..certificate.witness import WitnessSpec, analytic_code
from ..errors import AuditInputError
from ..nets.base import Encodes
from ..nets.likelihood import reconstruction_nll
from ..nets.registry import build_model
from ..sources.arrays import row_ranges
from ..sources.checkpoint import Checkpoint
from ..sources.datasets.dataset import to_unit_float
from ..sources.models.encode import encode_means
from .config import TrainConfig, resolve_config
from .losses import AlignmentLoss, prior_kl_per_dim
from .methods.base import Step
from .methods.registry import get_method
from .protocols import get_protocol

# The analytic code needs full-support p; GMM posteriors underflow to 0. The prefit *target* uses
# p floored at this value (and renormalised), which bounds its energy; the certificate never does.
PREFIT_PROB_FLOOR = 1e-4
MONITOR_BATCH = 1024
CSV_COLUMNS = (
    "epoch",
    "phase",
    "kl_weight",
    "align_weight",
    "loss",
    "recon",
    "kl",
    "align_batch",
    "margin",
    "margin_lcb",
    "certified",
    "teacher_information",
    "alignment_loss",
    "escape_force",
    "active_units",
    "mean_sq_norm",
    "mean_prior_kl",
    "witness_agreement",
    "max_abs_deviation_from_mean",
)


@dataclass
class TrainResult:
    model: nn.Module
    architecture: dict
    witness: dict  # {"num_classes", "beta", "offset"}
    config: TrainConfig  # resolved: no None left where a default applies
    history: list[dict]  # one row per epoch (epoch 0: before training), CSV_COLUMNS
    epochs_run: int
    stopped_by: str  # "epochs" or the protocol's name when its stop condition was met


# --------------------------------------------------------------------------- the loop
@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Deterministic kernels and a fixed intra-op thread count (restored afterwards).

    With several threads MKL may pick kernels by the load it sees, so the same run on a busy
    machine can round differently; one thread (the default) gives the same bytes every time.
    """
    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])


def fresh_model(architecture: dict, seed: int) -> nn.Module:
    """Build a model with initial weights drawn from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(architecture)


@torch.no_grad()
def monitor_numbers(model: nn.Module, x: torch.Tensor, p: torch.Tensor, spec: WitnessSpec) -> CertificateNumbers:
    """The certificate's numbers on (x, p) with eval-mode means: the training-time monitor."""
    was_training = model.training
    model.eval()
    state = CertificateState(spec)
    for begin, end in row_ranges(0, len(x), MONITOR_BATCH):
        mu, logvar = encode_means(model, to_unit_float(x[begin:end]))
        state.update(mu, p[begin:end], logvar)
    model.train(was_training)
    return state.compute()


def prefit_targets(p: torch.Tensor, spec: WitnessSpec) -> torch.Tensor:
    """μ*(p) for every row (float32), with p floored at PREFIT_PROB_FLOOR for full support."""
    floored = np.maximum(p.numpy(), PREFIT_PROB_FLOOR)
    floored /= floored.sum(axis=1, keepdims=True)
    return torch.as_tensor(analytic_code(floored, spec), dtype=torch.float32)


def _history_row(
    epoch: int,
    phase: str,
    sums: dict[str, float],
    count: int,
    weights: tuple[float, float],
    numbers: CertificateNumbers,
) -> dict:
    diag = numbers.diagnostics
    mean = {k: (v / count if count else float("nan")) for k, v in sums.items()}
    return {
        "epoch": epoch,
        "phase": phase,
        "kl_weight": weights[0],
        "align_weight": weights[1],
        "loss": mean.get("loss", float("nan")),
        "recon": mean.get("recon", float("nan")),
        "kl": mean.get("kl", float("nan")),
        "align_batch": mean.get("align", float("nan")),
        "margin": numbers.margin,
        "margin_lcb": numbers.margin_lcb(0.95),
        "certified": decide(numbers, 0.95, 0.0).certified,
        "teacher_information": numbers.teacher_information,
        "alignment_loss": numbers.alignment_loss,
        "escape_force": diag["escape_force"],
        "active_units": diag["active_units"],
        "mean_sq_norm": diag["mean_sq_norm"],
        "mean_prior_kl": diag["mean_prior_kl"],
        "witness_agreement": diag["witness_agreement"],
        "max_abs_deviation_from_mean": diag["max_abs_deviation_from_mean"],
    }


def train_model(
    cfg: TrainConfig,
    x: torch.Tensor,
    p: torch.Tensor,
    init: Checkpoint | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train on samples ``x`` (N×…, stored dtype) with teacher probabilities ``p`` (N×K, float64).

    Epoch 0 of the history is the monitor before any step. A protocol stops at the first ELBO
    epoch whose monitor meets its condition; otherwise all ``cfg.epochs`` run (after the prefit).
    """
    cfg = resolve_config(cfg, init)
    # resolve_config fills these (from the defaults or the --init checkpoint's architecture and witness).
    assert cfg.method is not None and cfg.beta is not None and cfg.latent_dim is not None
    method, protocol = get_method(cfg.method), get_protocol(cfg.protocol)
    K = int(p.shape[1])
    if len(x) < K:
        raise AuditInputError(f"the teacher has K={K} classes but the training data has only {len(x)} samples")
    if init is not None:
        architecture, model = copy.deepcopy(init.architecture), copy.deepcopy(init.model)
        witness = dict(init.witness)
        if witness["num_classes"] != K:
            raise AuditInputError(
                f"--init {init.path} has a witness with K={witness['num_classes']}, the teacher gives K={K}"
            )
    else:
        architecture = method.architecture(cfg, tuple(x.shape[1:]))
        model = fresh_model(architecture, cfg.seed)
        witness = {"num_classes": K, "beta": float(cfg.beta), "offset": 0}
    align_loss = AlignmentLoss(K, cfg.latent_dim, witness["beta"], witness["offset"])
    spec = align_loss.spec
    p32 = p.to(torch.float32)
    generator = torch.Generator().manual_seed(cfg.seed)
    mu_star = prefit_targets(p, spec) if method.prefit_epochs(cfg) else None
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)

    history = [_history_row(0, "init", {}, 0, (float("nan"), float("nan")), monitor_numbers(model, x, p, spec))]
    if on_epoch:
        on_epoch(history[-1])
    phases = [("prefit", method.prefit_epochs(cfg)), ("elbo", cfg.epochs)]
    epoch, stopped_by = 0, "epochs"
    with _deterministic(cfg.threads):
        model.train()
        for phase, count in phases:
            for phase_epoch in range(count):
                epoch += 1
                sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0, "align": 0.0}
                weights = (0.0, 0.0)
                for step, idx in enumerate(torch.randperm(len(x), generator=generator).split(cfg.batch_size)):
                    t = phase_epoch + step / steps_per_epoch
                    xb = to_unit_float(x[idx])
                    mu, logvar = cast(Encodes, model).encode(xb)
                    if phase == "prefit":
                        assert mu_star is not None  # a prefit phase runs only when the method has prefit epochs
                        loss = ((mu - mu_star[idx]) ** 2).sum(dim=1).mean()
                        terms = {"loss": loss}
                    else:
                        z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
                        recon = reconstruction_nll(model, xb, z).mean()
                        kl_dim = prior_kl_per_dim(mu, logvar)
                        align = align_loss(mu, p32[idx])
                        weights = (method.kl_weight(cfg, t), method.align_weight(cfg, t))
                        loss = recon + weights[0] * method.kl_penalty(kl_dim, cfg) + weights[1] * align
                        extra = method.extra_loss(Step(model, xb, mu, logvar, z, p32[idx], cfg, t))
                        if extra is not None:
                            loss = loss + extra
                        terms = {"loss": loss, "recon": recon, "kl": kl_dim.sum(), "align": align}
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    for key, value in terms.items():
                        sums[key] += float(value.detach()) * len(idx)
                if phase == "prefit":
                    sums = {"loss": sums["loss"]}
                numbers = monitor_numbers(model, x, p, spec)
                history.append(_history_row(epoch, phase, sums, len(x), weights, numbers))
                if on_epoch:
                    on_epoch(history[-1])
                if phase == "elbo" and protocol is not None and protocol.done(numbers):
                    stopped_by = protocol.name
                    break
    model.eval()
    return TrainResult(model, architecture, witness, cfg, history, epoch, stopped_by)
