"""What ``model.encode(x)`` returned, as the latent means μ (B, d) and log σ² when the model gives them.

Libraries return many shapes of output; this adapter accepts, and records which part it read:

- a tensor: μ itself;
- a tuple or list: μ is element 0 (recursively, so diffusers' ``(DiagonalGaussianDistribution,)``
  works), log σ² is element 1 when it is a tensor;
- anything with a ``latent_dist`` (diffusers' ``AutoencoderKLOutput``): read from that;
- a ``torch.distributions.Distribution``: ``.mean`` and ``log(.variance)``;
- a mapping, dataclass, ``ModelOutput`` or plain object with a tensor ``mean``/``mu``/``embedding``
  (μ) and optionally ``logvar``/``log_var``/``log_covariance`` (log σ²).

Sampled latents (``z``, ``sample``) are never read: μ(x) must be a function of x. A (B, …) mean is
flattened to (B, d) in C order of its logical shape (spatial latents (B, C, H, W) become
channel-major vectors whatever their memory layout), and the record says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import nn

from ...errors import AuditInputError
from ...nets.base import Encodes

MEAN_FIELDS = ("mean", "mu", "embedding")
LOGVAR_FIELDS = ("logvar", "log_var", "log_covariance")


@dataclasses.dataclass(frozen=True)
class EncodeRecord:
    """Which part of the encoder's output was read, and how it was shaped: the same for every batch."""

    mean: str  # e.g. "encode(x)[0]", "encode(x).latent_dist.mean"
    logvar: str | None
    latent_shape: tuple[int, ...]  # one sample's μ, as the encoder returned it
    flattened: bool

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "logvar": self.logvar,
            "latent_shape": list(self.latent_shape),
            "flattened": "C order (row-major over latent_shape)" if self.flattened else False,
        }


class Means(NamedTuple):
    mu: torch.Tensor  # (B, d)
    logvar: torch.Tensor | None  # (B, d)
    record: EncodeRecord


def _field(out: Any, name: str) -> Any:
    if isinstance(out, Mapping):
        return out.get(name)
    try:
        return getattr(out, name, None)
    except Exception:  # a property that raises counts as absent
        return None


def _tensor_field(out: Any, names: Sequence[str], where: str) -> tuple[torch.Tensor | None, str | None]:
    found = [(name, value) for name in names if isinstance(value := _field(out, name), torch.Tensor)]
    if not found:
        return None, None
    name, value = found[0]
    for other, candidate in found[1:]:
        if candidate is not value and not torch.equal(candidate, value):
            raise AuditInputError(
                f"{where} has two different tensors {name!r} and {other!r} for one quantity: cannot tell which to use"
            )
    return value, f"{where}.{name}"


def _describe(out: Any) -> str:
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with keys {[str(k) for k in list(out)[:8]]}"
    if dataclasses.is_dataclass(out):
        return f"{type(out).__name__} with fields {[f.name for f in dataclasses.fields(out)][:8]}"
    return type(out).__name__


def _parts(out: Any, where: str) -> tuple[torch.Tensor, torch.Tensor | None, str, str | None]:
    """μ, log σ² (or None) and where each was found in ``out``."""
    if isinstance(out, torch.Tensor):
        return out, None, where, None
    if isinstance(out, torch.distributions.Distribution):
        return out.mean, out.variance.log(), f"{where}.mean", f"log({where}.variance)"
    if isinstance(out, (tuple, list)):
        if not out:
            raise AuditInputError(f"{where} returned an empty {type(out).__name__}")
        if not isinstance(out[0], torch.Tensor):
            return _parts(out[0], f"{where}[0]")
        logvar = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None
        return out[0], logvar, f"{where}[0]", f"{where}[1]" if logvar is not None else None
    latent_dist = _field(out, "latent_dist")
    if latent_dist is not None:
        return _parts(latent_dist, f"{where}.latent_dist")
    mu, mu_source = _tensor_field(out, MEAN_FIELDS, where)
    if mu is None or mu_source is None:
        raise AuditInputError(
            f"{where} returned a {_describe(out)}, with no tensor {', '.join(MEAN_FIELDS)} and no latent_dist: "
            "return the posterior mean (a tensor, a (mu, logvar) tuple, or one of those fields)"
        )
    logvar, logvar_source = _tensor_field(out, LOGVAR_FIELDS, where)
    return mu, logvar, mu_source, logvar_source


def read_means(model: nn.Module, x: torch.Tensor) -> Means:
    """μ as (B, d), log σ² as (B, d) or None, and the record of where they came from, of ``model.encode(x)``."""
    batch = x.shape[0]
    mu, logvar, mu_source, logvar_source = _parts(cast(Encodes, model).encode(x), "encode(x)")
    if mu.dim() == 0 or mu.shape[0] != batch:
        raise AuditInputError(
            f"{mu_source} has shape {tuple(mu.shape)}: its first dimension must be the batch of {batch} inputs"
        )
    if logvar is not None and logvar.shape != mu.shape:
        logvar, logvar_source = None, None  # not a per-dimension log-variance (e.g. a concentration)
    latent_shape = tuple(int(s) for s in mu.shape[1:])
    record = EncodeRecord(mu_source, logvar_source, latent_shape, flattened=len(latent_shape) != 1)
    return Means(mu.reshape(batch, -1), None if logvar is None else logvar.reshape(batch, -1), record)


def encode_means(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """μ (B, d) and log σ² (B, d) or None, from ``model.encode(x)`` (see :func:`read_means`)."""
    mu, logvar, _ = read_means(model, x)
    return mu, logvar
