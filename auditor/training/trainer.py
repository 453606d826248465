"""The reference trainer behind ``audit train``: a VAE on a data split, against a fixed teacher.

:func:`train_model` is the loop (in-memory tensors in, model and per-epoch history out);
:func:`train_to_file` is what the command runs: it reads the data and the teacher, checks that
they fit together, trains, and writes ``X.safetensors`` (DESIGN §3, with the witness and full
provenance in ``vae_audit.training``) and the per-epoch monitor ``X.csv`` beside it.

What each method adds to the loss lives in :mod:`auditor.train_methods` (the extension point).
The per-epoch monitor is the certificate state itself (:class:`~auditor.certificate.CertificateState`
over the training data with eval-mode means), so the CSV's margin is the number ``audit certify``
would give on that split.

Determinism: every random draw (initialisation, batch order, reparameterisation noise) comes from
generators seeded by ``--seed``; the global RNG is forked around initialisation and left as it
was. Same seed, data, teacher and machine → the same checkpoint bytes on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..certificate.state import CertificateNumbers, CertificateState, decide
from ..sources.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..sources.datasets.dataset import open_dataset, to_unit_float
from ..errors import AuditInputError
from ..audit.stream import encode_means, row_ranges
from ..sources.hashing import atomic_write_text, sha256_file
from ..nets.base import build_model
from ..teachers.pca_gmm import load_teacher
from .methods.base import METHODS, Step, alignment_loss, get_method, get_protocol, prior_kl_per_dim, reconstruction_nll
from ..certificate.witness import WitnessSpec, analytic_code, witness_matrix

DEFAULT_LATENT_DIM = 16
DEFAULT_HIDDEN = (128,)
DEFAULT_CHANNELS = (32, 64, 128)
DEFAULT_BETA = 2.0
DEFAULT_ALIGN_WEIGHT = 10.0
# The analytic code needs full-support p; GMM posteriors underflow to 0. The prefit *target* uses
# p floored at this value (and renormalised), which bounds its energy; the certificate never does.
PREFIT_PROB_FLOOR = 1e-4
MONITOR_BATCH = 1024
CSV_COLUMNS = (
    "epoch", "phase", "kl_weight", "align_weight", "loss", "recon", "kl", "align_batch",
    "margin", "margin_lcb", "certified", "teacher_information", "alignment_loss", "escape_force",
    "active_units", "mean_sq_norm", "mean_prior_kl", "witness_agreement", "max_abs_deviation_from_mean",
)


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
    threads: int = 1  # intra-op threads while training (see _deterministic)
    extra: dict = field(default_factory=dict)

    def architecture(self, input_shape: tuple[int, ...]) -> dict:
        """The ``vae_audit.architecture`` JSON of a fresh model for samples of ``input_shape``."""
        if self.arch not in ("mlp", "conv"):
            raise AuditInputError(f"unknown --arch {self.arch!r} (the trainer builds: mlp, conv)")
        common = {"input_shape": list(input_shape), "latent_dim": self.latent_dim,
                  "activation": self.activation, "likelihood": self.likelihood}
        if self.arch == "conv":
            return {"name": "conv", "channels": list(self.channels), **common}
        return {"name": "mlp", "hidden": list(self.hidden), **common}

    def provenance(self) -> dict:
        values = asdict(self)
        for key in ("hidden", "channels"):
            values[key] = list(values[key]) if values[key] is not None else None
        return values


@dataclass
class TrainResult:
    model: nn.Module
    architecture: dict
    witness: dict  # {"num_classes", "beta", "offset"}
    config: TrainConfig  # resolved: no None left where a default applies
    history: list[dict]  # one row per epoch (epoch 0: before training), CSV_COLUMNS
    epochs_run: int
    stopped_by: str  # "epochs" or the protocol's name when its stop condition was met


# --------------------------------------------------------------------------- configuration
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
    protocol = get_protocol(cfg.protocol)
    if protocol is not None and init is None:
        raise AuditInputError(f"--protocol {protocol.name} continues a trained model: give --init CHECKPOINT")
    method_name = cfg.method or (protocol.default_method if protocol else None)
    if method_name is None:
        raise AuditInputError("give --method (vanilla, aligned, prefit, beta, free-bits, kl-anneal, cyclical, ...)")
    method = get_method(method_name)
    if protocol is not None and method.uses_alignment != protocol.alignment:
        need = "uses" if protocol.alignment else "does not use"
        raise AuditInputError(f"--protocol {protocol.name} needs a method that {need} the witness alignment, not {method_name!r}")
    if cfg.align_weight is not None and cfg.align_weight > 0 and not method.uses_alignment:
        aligned = ", ".join(name for name, m in METHODS.items() if m.uses_alignment)
        raise AuditInputError(f"--method {method_name} does not use the witness alignment, so --align-weight would be "
                              f"ignored; choose an aligned method ({aligned})")
    kl_weight = cfg.kl_weight if cfg.kl_weight is not None else (protocol.default_kl_weight if protocol else 1.0)
    align_weight = cfg.align_weight if cfg.align_weight is not None else DEFAULT_ALIGN_WEIGHT
    resolved = replace(cfg, method=method_name, kl_weight=kl_weight, align_weight=align_weight)
    if init is not None:
        resolved = _settings_from_checkpoint(resolved, init)
    else:
        resolved = replace(
            resolved, arch=cfg.arch or "mlp", beta=cfg.beta if cfg.beta is not None else DEFAULT_BETA,
            latent_dim=cfg.latent_dim or DEFAULT_LATENT_DIM,
            hidden=tuple(cfg.hidden) if cfg.hidden else (DEFAULT_HIDDEN if (cfg.arch or "mlp") == "mlp" else None),
            channels=tuple(cfg.channels) if cfg.channels else (DEFAULT_CHANNELS if cfg.arch == "conv" else None),
        )
    method.check(resolved)
    return resolved


def _settings_from_checkpoint(cfg: TrainConfig, init: Checkpoint) -> TrainConfig:
    arch, where = init.architecture, f"--init {init.path}"
    from_ckpt = {"arch": arch.get("name"), "latent_dim": arch.get("latent_dim"), "beta": init.witness["beta"],
                 "hidden": tuple(arch["hidden"]) if "hidden" in arch else None,
                 "channels": tuple(arch["channels"]) if "channels" in arch else None}
    for key, flag in (("arch", "--arch"), ("latent_dim", "--latent-dim"), ("hidden", "--hidden"),
                      ("channels", "--channels"), ("beta", "--beta")):
        asked = getattr(cfg, key)
        if asked is not None and (tuple(asked) if isinstance(asked, (list, tuple)) else asked) != from_ckpt[key]:
            raise AuditInputError(f"{where} has {key} {from_ckpt[key]!r} but {flag} asks for {asked!r}: "
                                  "the architecture and witness of a resumed model must match")
    return replace(cfg, activation=arch.get("activation", cfg.activation),
                   likelihood=arch.get("likelihood", cfg.likelihood), **from_ckpt)


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


def _history_row(epoch: int, phase: str, sums: dict[str, float], count: int, weights: tuple[float, float],
                 numbers: CertificateNumbers) -> dict:
    diag = numbers.diagnostics
    mean = {k: (v / count if count else float("nan")) for k, v in sums.items()}
    return {
        "epoch": epoch, "phase": phase, "kl_weight": weights[0], "align_weight": weights[1],
        "loss": mean.get("loss", float("nan")), "recon": mean.get("recon", float("nan")),
        "kl": mean.get("kl", float("nan")), "align_batch": mean.get("align", float("nan")),
        "margin": numbers.margin, "margin_lcb": numbers.margin_lcb(0.95),
        "certified": decide(numbers, 0.95, 0.0).certified,
        "teacher_information": numbers.teacher_information, "alignment_loss": numbers.alignment_loss,
        "escape_force": diag["escape_force"], "active_units": diag["active_units"],
        "mean_sq_norm": diag["mean_sq_norm"], "mean_prior_kl": diag["mean_prior_kl"],
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
    method, protocol = get_method(cfg.method), get_protocol(cfg.protocol)
    K = int(p.shape[1])
    if K > len(x):
        raise AuditInputError(f"the teacher has K={K} classes but the training data has only {len(x)} samples")
    if init is not None:
        architecture, model = copy.deepcopy(init.architecture), copy.deepcopy(init.model)
        witness = dict(init.witness)
        if witness["num_classes"] != K:
            raise AuditInputError(f"--init {init.path} has a witness with K={witness['num_classes']}, the teacher gives K={K}")
    else:
        architecture = method.architecture(cfg, tuple(x.shape[1:]))
        model = fresh_model(architecture, cfg.seed)
        witness = {"num_classes": K, "beta": float(cfg.beta), "offset": 0}
    spec = WitnessSpec(K, cfg.latent_dim, witness["beta"], witness["offset"])
    S = torch.as_tensor(witness_matrix(spec), dtype=torch.float32)
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
                    mu, logvar = model.encode(xb)
                    if phase == "prefit":
                        loss = ((mu - mu_star[idx]) ** 2).sum(dim=1).mean()
                        terms = {"loss": loss}
                    else:
                        z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
                        recon = reconstruction_nll(model, xb, z).mean()
                        kl_dim = prior_kl_per_dim(mu, logvar)
                        align = alignment_loss(mu, p32[idx], S, spec.beta)
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


# --------------------------------------------------------------------------- files
def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def monitor_csv_path(out: Path) -> Path:
    return Path(out).with_suffix(".csv")


@dataclass
class TrainingData:
    """One split's samples and the fixed teacher's probabilities on them, read once, reused by runs."""

    data: str
    split: str
    x: torch.Tensor  # N×… in the stored dtype (uint8 stays uint8)
    p: torch.Tensor  # N×K float64
    teacher_path: Path
    teacher_k: int
    record: dict  # provenance of data and teacher


def load_training_data(data: str, split: str | None, teacher_path: Path) -> TrainingData:
    """Read the split and run the teacher on it, checking that the two fit together."""
    teacher_path = Path(teacher_path)
    dataset = open_dataset(data, split)
    teacher = load_teacher(teacher_path, False, dataset.sample_shape).eval()
    size = math.prod(dataset.sample_shape)
    if teacher.input_dim is not None and teacher.input_dim != size:
        raise AuditInputError(f"the teacher takes inputs of size {teacher.input_dim} but the data samples have size {size}")
    if teacher.num_classes > dataset.num_samples:
        raise AuditInputError(f"the teacher has K={teacher.num_classes} classes but {data!r} ({dataset.split}) "
                              f"has only {dataset.num_samples} samples")
    x = torch.from_numpy(dataset.read(0, dataset.num_samples))
    with torch.no_grad():
        p = torch.cat([teacher(to_unit_float(x[b:e])).to(torch.float64) for b, e in row_ranges(0, len(x), MONITOR_BATCH)])
    record = {
        "data": {"spec": data, "split": dataset.split, "num_samples": dataset.num_samples,
                 "inputs": [{"path": r.path, "sha256": r.sha256} for r in dataset.inputs]},
        "teacher": {"path": str(teacher_path), "sha256": sha256_file(teacher_path), "num_classes": teacher.num_classes},
    }
    return TrainingData(data, dataset.split, x, p, teacher_path, teacher.num_classes, record)


def train_and_save(cfg: TrainConfig, inputs: TrainingData, out: Path, init_path: Path | None = None,
                   on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train on ``inputs`` and write ``out`` (.safetensors) and the per-epoch monitor (.csv) beside it."""
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise AuditInputError(f"--out must name a .safetensors file, got {out}")
    init = load_checkpoint(init_path) if init_path is not None else None
    if init is not None and math.prod(init.architecture["input_shape"]) != math.prod(inputs.x.shape[1:]):
        raise AuditInputError(f"--init {init_path} takes inputs of shape {init.architecture['input_shape']}, "
                              f"the data samples have shape {list(inputs.x.shape[1:])}")
    result = train_model(cfg, inputs.x, inputs.p, init, on_epoch)
    training = {
        **result.config.provenance(),
        "epochs_run": result.epochs_run,
        "stopped_by": result.stopped_by,
        **inputs.record,
        "init": None if init_path is None else {"path": str(init_path), "sha256": sha256_file(init_path)},
        "final": {k: result.history[-1][k] for k in ("margin", "margin_lcb", "certified", "active_units")},
        "tool_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    save_checkpoint(out, result.model, result.architecture, result.witness, training)
    atomic_write_text(monitor_csv_path(out), history_csv(result.history))
    return result


def train_to_file(cfg: TrainConfig, data: str, split: str | None, teacher_path: Path, out: Path,
                  init_path: Path | None = None, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """What ``audit train`` runs: check the arguments, read data and teacher, train, write."""
    if Path(out).suffix.lower() != ".safetensors":
        raise AuditInputError(f"--out must name a .safetensors file, got {out}")
    resolve_config(cfg, load_checkpoint(init_path) if init_path is not None else None)  # argument errors first
    return train_and_save(cfg, load_training_data(data, split, teacher_path), out, init_path, on_epoch)
