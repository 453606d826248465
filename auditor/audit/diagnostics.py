"""Model diagnostics from the posterior-collapse literature, reported beside the certificate.

These need more than the latent means the certificate reads: the posterior log-variance (mutual
information) or the decoder (self-consistency, IMA contrast, identifiability probe). Each is
computed on a bounded, deterministic sample of the audit set — at most ``max_samples`` rows,
evenly spaced over it — with every random draw from a generator seeded by ``seed``, so audits stay
fast and the same inputs give the same numbers. They are never folded into the verdict.

- ``mutual_information``: I_q(x; z), the aggregate-posterior estimator of He et al. (2019,
  "Lagging Inference Networks"): per batch, E_i[−H(q(z|x_i))] − E_i[log q̂(z_i)], z_i ~ q(z|x_i),
  q̂(z) = (1/B) Σ_j q(z|x_j); averaged over batches weighted by their size. At most log B.
- ``self_consistency_latent``: E_{z~N(0,I)} ‖μ(m(z)) − z‖², m = decoder mean (Reizinger et al.,
  "Embrace the Gap", NeurIPS 2022); ``self_consistency_data``: E_x ‖x − m(μ(x))‖².
- ``ima_contrast``: ½[Σ_k log ‖J_k‖² − log det(JᵀJ)] of the decoder-mean Jacobian J (D×d) at μ(x),
  averaged over at most 128 of the sampled inputs (evenly spaced); ≥ 0 (Hadamard), 0 iff J's
  columns are orthogonal (ibid.).
- ``identifiability``: mean over x of log p(x | z = μ(x)) − log p(x | z ~ N(0, I)) (after Wang,
  Blei & Cunningham, NeurIPS 2021): 0 means the likelihood ignores z.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..nets.base import Decodes
from ..nets.likelihood import LIKELIHOOD_MEANS, decoder_mean, reconstruction_nll
from ..sources.arrays import row_ranges
from ..sources.datasets.dataset import to_unit_float
from ..sources.models.encode import encode_means
from .plan import PassPlan

MAX_SAMPLES = 512
SEED = 0
CHUNK = 128  # rows per decoder/Jacobian evaluation
JACOBIAN_FLOATS = 1 << 24
IMA_MAX_SAMPLES = 128


# --------------------------------------------------------------------------- the formulas
def mutual_information(
    mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor, batch_size: int | None = None
) -> float:
    """He et al.'s estimate of I_q(x; z) from means, log-variances and standard-normal ``noise`` (all N×d)."""
    mu, logvar, noise = (t.detach().to(torch.float64) for t in (mu, logvar, noise))
    n, d = mu.shape
    batch_size = batch_size or n
    total = 0.0
    for begin, end in row_ranges(0, n, batch_size):
        m, lv = mu[begin:end], logvar[begin:end]
        b = end - begin
        neg_entropy = (-0.5 * d * math.log(2 * math.pi) - 0.5 * (1 + lv).sum(dim=1)).mean()
        z = m + noise[begin:end] * (0.5 * lv).exp()
        dev = z[:, None, :] - m[None, :, :]  # z_i against every q(·|x_j)
        log_density = (
            -0.5 * (dev**2 / lv.exp()[None]).sum(dim=2) - 0.5 * (d * math.log(2 * math.pi) + lv.sum(dim=1))[None]
        )
        log_qz = torch.logsumexp(log_density, dim=1) - math.log(b)
        total += float(neg_entropy - log_qz.mean()) * b
    return total / n


def encoder_means(model: nn.Module, x_flat: torch.Tensor, input_shape) -> torch.Tensor:
    return encode_means(model, x_flat.reshape(x_flat.shape[0], *input_shape))[0]


def self_consistency_latent(model: nn.Module, z: torch.Tensor, input_shape) -> float:
    """Mean over the rows of prior draws ``z`` of ‖μ(m(z)) − z‖²."""
    with torch.no_grad():
        back = torch.cat(
            [encoder_means(model, decoder_mean(model, z[b:e]), input_shape) for b, e in row_ranges(0, len(z), CHUNK)]
        )
    return float(((back.to(torch.float64) - z.to(torch.float64)) ** 2).sum(dim=1).mean())


def self_consistency_data(model: nn.Module, x_flat: torch.Tensor, mu: torch.Tensor) -> float:
    """Mean over inputs of ‖x − m(μ(x))‖²."""
    with torch.no_grad():
        recon = torch.cat([decoder_mean(model, mu[b:e]) for b, e in row_ranges(0, len(mu), CHUNK)])
    return float(((x_flat.to(torch.float64) - recon.to(torch.float64)) ** 2).sum(dim=1).mean())


def decoder_jacobian(fn, z: torch.Tensor) -> torch.Tensor:
    """J_i = ∂fn(z)_i/∂z_i for every row (B×D×d), for a row-wise map fn: (B, d) → (B, D).

    Reverse over reverse: v(w) = Σ_i J_iᵀ w_i is linear in w, and ∂v_k/∂w = column k of every J_i,
    so d backward passes give all Jacobians (forward mode cannot run through ``autograd.grad``,
    which the ``lidvae`` decoder uses).
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        out = fn(z)
        w = torch.zeros_like(out, requires_grad=True)
        (vjp,) = torch.autograd.grad(out, z, grad_outputs=w, create_graph=True)
        columns = [
            torch.autograd.grad(vjp[:, k].sum(), w, retain_graph=True, allow_unused=True)[0] for k in range(z.shape[1])
        ]
    return torch.stack([c if c is not None else torch.zeros_like(out) for c in columns], dim=2).detach()


def ima_contrast(J: torch.Tensor) -> torch.Tensor:
    """½[Σ_k log ‖J_k‖² − log det(JᵀJ)] per row of a B×D×d batch (float64; inf where JᵀJ is singular).

    Computed as −½ log det of the Gram matrix of the unit-normalised columns, which is the same
    number and stays accurate when the column norms differ by orders of magnitude.
    """
    J = J.to(torch.float64)
    norms = J.norm(dim=1, keepdim=True)
    unit = J / torch.where(norms > 0, norms, torch.ones_like(norms))
    sign, logdet = torch.linalg.slogdet(unit.transpose(1, 2) @ unit)
    singular = (sign <= 0) | (norms.squeeze(1) == 0).any(dim=1)
    return torch.where(singular, torch.full_like(logdet, math.inf), -0.5 * logdet)


def identifiability_probe(model: nn.Module, x: torch.Tensor, mu: torch.Tensor, z_prior: torch.Tensor) -> dict:
    """Mean log p(x | μ(x)), mean log p(x | z ~ prior) and their difference (nats per sample)."""
    with torch.no_grad():
        at_mean = torch.cat([-reconstruction_nll(model, x[b:e], mu[b:e]) for b, e in row_ranges(0, len(x), CHUNK)])
        at_prior = torch.cat(
            [-reconstruction_nll(model, x[b:e], z_prior[b:e]) for b, e in row_ranges(0, len(x), CHUNK)]
        )
    at_mean, at_prior = at_mean.to(torch.float64).mean(), at_prior.to(torch.float64).mean()
    return {"log_lik_at_mean": float(at_mean), "log_lik_at_prior": float(at_prior), "gap": float(at_mean - at_prior)}


# --------------------------------------------------------------------------- the audit's sample
def evenly_spaced_rows(num_samples: int, max_samples: int) -> np.ndarray:
    """At most ``max_samples`` row indices spread evenly over [0, num_samples), first and last included."""
    if num_samples <= max_samples:
        return np.arange(num_samples)
    return np.unique(np.linspace(0, num_samples - 1, max_samples).round().astype(np.int64))


def _read_rows(source, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([np.asarray(source.read(int(i), int(i) + 1)) for i in rows]))


def _unavailable(reason: str) -> dict:
    return {"computed": False, "reason": reason}


def _probabilities_for_logits(model: nn.Module, mu: torch.Tensor) -> str | None:
    """Why the decoder diagnostics must not run, when a decoder declared bernoulli returns probabilities.

    A bernoulli decoder returns logits; one that returns sigmoid(logits) instead would give wrong
    numbers, not an error. Logits of a trained model are not all within [0, 1] (that would make
    every probability lie between 0.5 and 0.73), so outputs that all are look like probabilities.
    """
    if cast(Decodes, model).likelihood != "bernoulli":
        return None
    with torch.no_grad():
        out = cast(Decodes, model).decode(mu)
    if bool(((out >= 0) & (out <= 1)).all()):
        return (
            "the model declares likelihood 'bernoulli' but decode(z) returns values all within [0, 1], "
            "like probabilities: it must return logits"
        )
    return None


def model_diagnostics(plan: PassPlan, device: torch.device, max_samples: int = MAX_SAMPLES, seed: int = SEED) -> dict:
    """Every diagnostic the plan's model supports, on its bounded sample; the others say why not."""
    rows = evenly_spaced_rows(plan.num_samples, max_samples)
    generator = torch.Generator().manual_seed(seed)
    model = plan.encoder
    result: dict[str, Any] = {"num_samples": int(len(rows)), "seed": seed}

    x = None
    if "mu" in plan.sources:  # precomputed latents: no model, possibly log-variances
        mu = _read_rows(plan.sources["mu"], rows).to(torch.float32)
        logvar = _read_rows(plan.sources["logvar"], rows).to(torch.float32) if "logvar" in plan.sources else None
    else:
        assert model is not None  # no precomputed means: the plan has an encoder to run on x
        x = to_unit_float(_read_rows(plan.sources["x"], rows)).to(device)
        input_shape = plan.input_shape or tuple(x.shape[1:])
        x = x.reshape(len(x), -1)
        with torch.no_grad():
            out = [encode_means(model, x[b:e].reshape(e - b, *input_shape)) for b, e in row_ranges(0, len(x), CHUNK)]
        mu = torch.cat([m for m, _ in out])
        logvars = [lv for _, lv in out if lv is not None]
        logvar = torch.cat(logvars) if len(logvars) == len(out) else None
    d = mu.shape[1]

    noise = torch.randn(mu.shape, generator=generator, dtype=torch.float64)
    result["mutual_information"] = (
        {"computed": True, "value": mutual_information(mu.cpu(), logvar.cpu(), noise), "batch_size": int(len(rows))}
        if logvar is not None
        else _unavailable("the encoder gives no log-variances")
    )

    z_prior = torch.randn(len(rows), d, generator=generator).to(device)
    reason: str | None
    if x is None or model is None:
        reason = "precomputed latents have no decoder"
    elif not callable(getattr(model, "decode", None)):
        reason = "the model has no decode(z)"
    elif getattr(model, "likelihood", None) not in LIKELIHOOD_MEANS:
        reason = (
            f"the model's likelihood {getattr(model, 'likelihood', None)!r} is not one of {', '.join(LIKELIHOOD_MEANS)}"
        )
    else:
        reason = _probabilities_for_logits(model, mu[:CHUNK])
    if reason is not None:
        for key in ("self_consistency", "ima_contrast", "identifiability"):
            result[key] = _unavailable(reason)
        return result
    assert x is not None and model is not None  # reason is None only when the model ran on inputs x

    result["self_consistency"] = {
        "computed": True,
        "latent": self_consistency_latent(model, z_prior, input_shape),
        "data": self_consistency_data(model, x, mu),
    }
    # d backward passes per chunk: the contrast uses at most IMA_MAX_SAMPLES of the sampled rows,
    # and a chunk holds rows·D·d Jacobian entries (twice, in float64): at most ~2²⁴ of them.
    mu_ima = mu[torch.as_tensor(evenly_spaced_rows(len(mu), IMA_MAX_SAMPLES), device=mu.device)]
    jacobian_rows = max(1, min(CHUNK, JACOBIAN_FLOATS // (x.shape[1] * d)))
    contrast = torch.cat(
        [
            ima_contrast(decoder_jacobian(lambda z: decoder_mean(model, z), mu_ima[b:e]))
            for b, e in row_ranges(0, len(mu_ima), jacobian_rows)
        ]
    )
    finite = contrast[torch.isfinite(contrast)]
    result["ima_contrast"] = {
        "computed": True,
        "mean": float(finite.mean()) if len(finite) else None,
        "num_samples": int(len(contrast)),
        "num_singular": int((~torch.isfinite(contrast)).sum()),
    }
    result["identifiability"] = {"computed": True, **identifiability_probe(model, x, mu, z_prior)}
    return result


def headline_numbers(model_diag: dict | None) -> dict[str, float]:
    """One number per diagnostic (NaN where not computed), for tables such as ``audit reproduce``'s."""
    picks = {
        "mutual_information": ("mutual_information", "value"),
        "self_consistency_latent": ("self_consistency", "latent"),
        "self_consistency_data": ("self_consistency", "data"),
        "ima_contrast": ("ima_contrast", "mean"),
        "identifiability_gap": ("identifiability", "gap"),
    }
    out = {}
    for column, (key, field) in picks.items():
        entry = (model_diag or {}).get(key) or {}
        value = entry.get(field) if entry.get("computed") else None
        out[column] = float("nan") if value is None else float(value)
    return out
