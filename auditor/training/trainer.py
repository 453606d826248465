"""The reference trainer's loop: a VAE on in-memory samples, against fixed teacher probabilities.

:func:`train_model` takes tensors and returns the model and its per-epoch history;
:mod:`auditor.training.run` reads the files and writes the checkpoint around it. What each method
adds to the loss lives in :mod:`auditor.training.methods` (the extension point).

Batches reach the device through the audit's own input path (:mod:`auditor.audit.prefetch`,
:mod:`auditor.audit.transfer`): a background thread gathers each shuffled batch's rows as stored
(uint8 stays uint8), pins them for CUDA, and they are copied one batch ahead, non-blocking.
The per-epoch monitor is an audit pass (:func:`~auditor.audit.stream.stream_pass`) over the
training data with eval-mode means into the certificate state itself, so the CSV's margin is the
number ``audit certify`` would give on that split; under torchrun each rank audits a shard and
the states are combined (:mod:`auditor.training.distributed`).

Determinism (:mod:`auditor.training.device`): every random draw (initialisation, batch order,
reparameterisation noise) comes from generators seeded by ``--seed``; the global RNG is forked
around initialisation and left as it was. On a CPU, the same seed, data, teacher and machine give
the same checkpoint bytes, and a run resumed from its ``X.resume.pt`` is the uninterrupted run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from ..audit.distributed import Ranks, combine_across_ranks, shard_range
from ..audit.plan import PassPlan
from ..audit.prefetch import host_batches
from ..audit.stream import raise_for_nonfinite_inputs, stream_pass
from ..audit.transfer import device_batches
from ..certificate.numbers import CertificateNumbers
from ..certificate.state import CertificateState
from ..certificate.witness import WitnessSpec, analytic_code
from ..errors import AuditInputError
from ..nets.base import Encodes
from ..nets.likelihood import reconstruction_nll
from ..nets.registry import build_model
from ..sources.arrays import ArrayReader, InMemoryArray
from ..sources.checkpoint import Checkpoint
from ..sources.datasets.dataset import to_unit_float
from .config import TrainConfig, resolve_config
from .device import autocast, deterministic, noise_generator, training_device
from .distributed import broadcast_parameters, own_share, sum_gradients, sum_over_ranks
from .history import history_row
from .losses import AlignmentLoss, prior_kl_per_dim
from .methods.base import Method, Step
from .methods.registry import get_method
from .protocols import get_protocol
from .resume import ResumePoint, restore

# The analytic code needs full-support p; GMM posteriors underflow to 0. The prefit *target* uses
# p floored at this value (and renormalised), which bounds its energy; the certificate never does.
PREFIT_PROB_FLOOR = 1e-4
MONITOR_BATCH = 1024
TERMS = ("loss", "recon", "kl", "align")  # the training-batch means of the monitor CSV


@dataclass
class TrainResult:
    model: nn.Module
    architecture: dict
    witness: dict  # {"num_classes", "beta", "offset"}
    config: TrainConfig  # resolved: no None left where a default applies
    history: list[dict]  # one row per epoch (epoch 0: before training), CSV_COLUMNS
    epochs_run: int
    stopped_by: str  # "epochs" or the protocol's name when its stop condition was met


def fresh_model(architecture: dict, seed: int) -> nn.Module:
    """Build a model with initial weights drawn from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(architecture)


def prefit_targets(p: torch.Tensor, spec: WitnessSpec) -> torch.Tensor:
    """μ*(p) for every row (float32), with p floored at PREFIT_PROB_FLOOR for full support."""
    floored = np.maximum(p.numpy(), PREFIT_PROB_FLOOR)
    floored /= floored.sum(axis=1, keepdims=True)
    return torch.as_tensor(analytic_code(floored, spec), dtype=torch.float32)


@torch.no_grad()
def monitor_numbers(
    model: nn.Module, plan: PassPlan, spec: WitnessSpec, device: torch.device, ranks: Ranks = Ranks()
) -> CertificateNumbers:
    """The certificate's numbers on the plan's rows with eval-mode means: the training-time monitor.

    An audit pass at full precision (each rank its shard, the states combined), so the numbers
    are those ``audit certify`` gives the model on the same rows.
    """
    was_training = model.training
    model.eval()
    state = CertificateState(spec, device=device)
    start, stop = shard_range(plan.num_samples, ranks.rank, ranks.world_size)
    outcome = stream_pass(plan, state, MONITOR_BATCH, device, start, stop)
    raise_for_nonfinite_inputs(combine_across_ranks(state, outcome.nonfinite_rows, ranks))
    model.train(was_training)
    return state.compute()


@dataclass
class _Run:
    """What every epoch of one run uses."""

    cfg: TrainConfig
    method: Method
    model: nn.Module
    optimiser: torch.optim.Optimizer
    spec: WitnessSpec
    align_loss: AlignmentLoss  # the raw witness alignment, on the device
    sources: dict[str, ArrayReader]  # "x", "p" (float32) and, with a prefit phase, "mu_star"
    device: torch.device
    ranks: Ranks
    order: torch.Generator  # batch order (CPU)
    noise: torch.Generator  # reparameterisation noise (the same generator as ``order`` on a CPU)

    @property
    def num_samples(self) -> int:
        return int(self.sources["x"].shape[0])


def _batch_losses(run: _Run, phase: str, batch: dict[str, torch.Tensor], full: int, own: slice, t: float):
    """The loss of this rank's rows of one batch of ``full`` rows, its terms, and the KL and α weights."""
    cfg, method, model = run.cfg, run.method, run.model
    xb = to_unit_float(batch["x"])
    with autocast(run.device, cfg.precision):
        mu, logvar = cast(Encodes, model).encode(xb)
    mu, logvar = mu.float(), logvar.float()
    if phase == "prefit":
        loss = ((mu - batch["mu_star"]) ** 2).sum(dim=1).mean()
        return loss, {"loss": loss}, (0.0, 0.0)
    # Noise for the whole batch, this rank's rows of it: the generators of all ranks stay in step.
    noise = torch.randn((full, mu.shape[1]), generator=run.noise, device=run.device)[own]
    z = mu + noise * (0.5 * logvar).exp()
    with autocast(run.device, cfg.precision):
        recon = reconstruction_nll(model, xb, z).float().mean()
    kl_dim = prior_kl_per_dim(mu, logvar)
    align = run.align_loss(mu, batch["p"])
    weights = (method.kl_weight(cfg, t), method.align_weight(cfg, t))
    loss = recon + weights[0] * method.kl_penalty(kl_dim, cfg) + weights[1] * align
    extra = method.extra_loss(Step(model, xb, mu, logvar, z, batch["p"], cfg, t))
    if extra is not None:
        loss = loss + extra
    return loss, {"loss": loss, "recon": recon, "kl": kl_dim.sum(), "align": align}, weights


def _train_epoch(run: _Run, phase: str, phase_epoch: int) -> tuple[dict[str, float], tuple[float, float]]:
    """One epoch of steps; returns the sums of the batch-mean terms (weighted by rows) and the last weights."""
    full_batches = torch.randperm(run.num_samples, generator=run.order).split(run.cfg.batch_size)
    shares = [own_share(len(rows), run.ranks) for rows in full_batches]
    # A rank whose share of a (last, small) batch is empty computes on the batch's first row with
    # weight 0, so that it takes part in the gradient sum with the same tensors as the others.
    counts = [share.stop - share.start for share in shares]
    shares = [share if count else slice(0, 1) for share, count in zip(shares, counts)]
    selections = [rows[share].numpy() for rows, share in zip(full_batches, shares)]
    host = host_batches(run.sources, selections, pin=run.device.type == "cuda")
    sums = torch.zeros(len(TERMS), dtype=torch.float64, device=run.device)
    weights = (0.0, 0.0)
    for step, batch in enumerate(device_batches(host, run.device)):
        full, count = len(full_batches[step]), counts[step]
        t = phase_epoch + step / len(full_batches)
        loss, terms, weights = _batch_losses(run, phase, batch.tensors, full, shares[step], t)
        run.optimiser.zero_grad(set_to_none=True)
        # Weighted by the rank's share of the batch: summed over ranks, the gradient of the batch mean.
        (loss * (count / full) if run.ranks.distributed else loss).backward()
        sum_gradients(run.model, run.ranks)
        run.optimiser.step()
        values = torch.stack([terms.get(name, torch.zeros_like(loss)) for name in TERMS]).detach()
        sums += values.double() * count
    totals = dict(zip(TERMS, sum_over_ranks(sums, run.ranks).tolist()))
    return ({"loss": totals["loss"]} if phase == "prefit" else totals), weights


def train_model(
    cfg: TrainConfig,
    x: torch.Tensor,
    p: torch.Tensor,
    init: Checkpoint | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    *,
    ranks: Ranks = Ranks(),
    device: torch.device | None = None,
    resume: ResumePoint | None = None,
    checkpoint: Callable[[ResumePoint], None] | None = None,
) -> TrainResult:
    """Train on samples ``x`` (N×…, stored dtype) with teacher probabilities ``p`` (N×K, float64).

    Epoch 0 of the history is the monitor before any step. A protocol stops at the first ELBO
    epoch whose monitor meets its condition; otherwise all ``cfg.epochs`` run (after the prefit).
    ``device`` defaults to ``cfg.device``; ``resume`` continues from a :class:`ResumePoint`, and
    ``checkpoint`` receives one after every epoch that is not the run's last.
    """
    cfg = resolve_config(cfg, init)
    # resolve_config fills these (from the defaults or the --init checkpoint's architecture and witness).
    assert cfg.method is not None and cfg.beta is not None and cfg.latent_dim is not None
    device = training_device(cfg.device) if device is None else device
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
    align_loss = AlignmentLoss(K, cfg.latent_dim, witness["beta"], witness["offset"]).to(device)
    spec = align_loss.spec
    model.to(device)
    broadcast_parameters(model, ranks)
    order = torch.Generator().manual_seed(cfg.seed)
    run = _Run(
        cfg,
        method,
        model,
        torch.optim.Adam(model.parameters(), lr=cfg.lr),
        spec,
        align_loss,
        {"x": InMemoryArray(x.numpy()), "p": InMemoryArray(p.to(torch.float32).numpy())},
        device,
        ranks,
        order,
        noise_generator(cfg.seed, device, order),
    )
    if method.prefit_epochs(cfg):
        run.sources["mu_star"] = InMemoryArray(prefit_targets(p, spec).numpy())
    generators = {"order": run.order} if run.noise is run.order else {"order": run.order, "noise": run.noise}
    monitor_plan = PassPlan({"x": InMemoryArray(x.numpy()), "probs": InMemoryArray(p.numpy())}, encoder=model)
    schedule = [("prefit", e) for e in range(method.prefit_epochs(cfg))] + [("elbo", e) for e in range(cfg.epochs)]

    epoch, stopped_by = 0, "epochs"
    with deterministic(cfg.threads, device):
        if resume is not None:
            restore(resume, model, run.optimiser, cfg.lr, generators)
            history, epoch = list(resume.history), resume.epoch
        else:
            numbers = monitor_numbers(model, monitor_plan, spec, device, ranks)
            history = [history_row(0, "init", {}, 0, (float("nan"), float("nan")), numbers)]
            if on_epoch:
                on_epoch(history[-1])
        model.train()
        while epoch < len(schedule):
            phase, phase_epoch = schedule[epoch]
            epoch += 1
            sums, weights = _train_epoch(run, phase, phase_epoch)
            numbers = monitor_numbers(model, monitor_plan, spec, device, ranks)
            history.append(history_row(epoch, phase, sums, len(x), weights, numbers))
            if phase == "elbo" and protocol is not None and protocol.done(numbers):
                stopped_by = protocol.name
            elif checkpoint is not None and epoch < len(schedule):
                state = {name: g.get_state() for name, g in generators.items()}
                checkpoint(ResumePoint(epoch, history, model.state_dict(), run.optimiser.state_dict(), state))
            if on_epoch:
                on_epoch(history[-1])
            if stopped_by != "epochs":
                break
    model.eval()
    return TrainResult(model.cpu(), architecture, witness, cfg, history, epoch, stopped_by)
