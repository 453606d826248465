"""The PCA → diagonal-GMM teacher: the module computing T(·|x), and the ``teacher.pt`` dict it is
saved as (docs/formats.md), validated field by field before a module is built from it.

Reading and writing the file itself is :mod:`auditor.sources.teachers.files`.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from ..errors import AuditInputError, shown

TEACHER_FORMAT = "vae-audit-teacher/1"
PCA_GMM_KEYS = ("pca_mean", "pca_components", "log_weights", "means", "variances", "temperature")


class PcaGmmTeacher(nn.Module):
    """T(k|x) = softmax_k[(log w_k + Σ_j log N(y_j; m_kj, v_kj)) / τ] with y = (x − mean) @ Cᵀ.

    Computed in float64 so that the posterior matches scikit-learn's to rounding.
    """

    kind = "pca-gmm"
    # Registered as buffers in __init__; declared here so that the type checker knows they are tensors.
    pca_mean: torch.Tensor
    pca_components: torch.Tensor
    log_weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor

    def __init__(self, pca_mean, pca_components, log_weights, means, variances, temperature: float):
        super().__init__()
        for name, value in (
            ("pca_mean", pca_mean),
            ("pca_components", pca_components),
            ("log_weights", log_weights),
            ("means", means),
            ("variances", variances),
        ):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float64).clone())
        self.temperature = float(temperature)

    @property
    def num_classes(self) -> int:
        return int(self.log_weights.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.pca_mean.shape[0])

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + Σ_j log N(y_j; m_kj, v_kj), B×K (before the temperature)."""
        y = (x.reshape(x.shape[0], -1).to(torch.float64) - self.pca_mean) @ self.pca_components.T
        diff2 = (y[:, None, :] - self.means[None]) ** 2 / self.variances[None]
        log_norm = -0.5 * (diff2 + torch.log(2 * math.pi * self.variances)[None]).sum(dim=2)
        return self.log_weights[None] + log_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher probabilities, B×K float64."""
        return torch.softmax(self.log_joint(x) / self.temperature, dim=1)

    def to_dict(self) -> dict:
        return {
            "format": TEACHER_FORMAT,
            "kind": self.kind,
            "pca_mean": self.pca_mean.clone(),
            "pca_components": self.pca_components.clone(),
            "log_weights": self.log_weights.clone(),
            "means": self.means.clone(),
            "variances": self.variances.clone(),
            "temperature": self.temperature,
        }


def teacher_from_dict(obj: dict, where: str = "teacher") -> PcaGmmTeacher:
    """Validate a teacher dict of docs/formats.md and build the module."""
    if obj.get("format") != TEACHER_FORMAT:
        raise AuditInputError(
            f"{where}: not a vae-audit teacher (format {shown(obj.get('format'))}, expected {TEACHER_FORMAT!r})"
        )
    if obj.get("kind") != "pca-gmm":
        raise AuditInputError(f"{where}: unknown teacher kind {shown(obj.get('kind'))} (supported: 'pca-gmm')")
    missing = [k for k in PCA_GMM_KEYS if k not in obj]
    if missing:
        raise AuditInputError(f"{where}: teacher is missing {', '.join(missing)}")
    arrays = {key: _checked_tensor(obj[key], key, where).to(torch.float64) for key in PCA_GMM_KEYS[:-1]}
    D = arrays["pca_mean"].shape[0] if arrays["pca_mean"].ndim == 1 else -1
    K = arrays["log_weights"].shape[0] if arrays["log_weights"].ndim == 1 else -1
    comps = arrays["pca_components"]
    r = comps.shape[0] if comps.ndim == 2 else -1
    expected = {"pca_mean": (D,), "pca_components": (r, D), "log_weights": (K,), "means": (K, r), "variances": (K, r)}
    for key, shape in expected.items():
        if D < 1 or K < 2 or r < 1 or tuple(arrays[key].shape) != shape:
            raise AuditInputError(
                f"{where}: inconsistent teacher shapes ({', '.join(f'{k}={tuple(a.shape)}' for k, a in arrays.items())}); "
                "expected pca_mean (D,), pca_components (r, D), log_weights (K,), means and variances (K, r) with K >= 2"
            )
    if (arrays["variances"] <= 0).any():
        raise AuditInputError(f"{where}: teacher variances must be > 0")
    return PcaGmmTeacher(temperature=_temperature(obj["temperature"], where), **arrays)


def _checked_tensor(value, key: str, where: str) -> torch.Tensor:
    """``value`` if it is a dense, real, finite CPU tensor whose storage is exactly its elements.

    Checked on the metadata first, before any operation touches the data: ``torch.load`` with
    ``weights_only=True`` still returns sparse tensors whose indices lie outside their size (an
    operation on them can crash the process), tensors on the ``meta`` device (no data at all),
    complex tensors (a conversion to float drops the imaginary part), and stride-0 views that
    make a few bytes of storage look like gigabytes of elements, which the first copy materialises.
    """
    if not isinstance(value, torch.Tensor):
        raise AuditInputError(f"{where}: teacher field {key!r} must be a tensor")
    if value.layout != torch.strided or value.is_quantized or value.is_nested:
        raise AuditInputError(f"{where}: teacher field {key!r} is a {value.layout} tensor; teachers hold dense tensors")
    if value.device.type != "cpu":
        raise AuditInputError(
            f"{where}: teacher field {key!r} is on the {value.device.type} device, with no data in the file"
        )
    if not value.dtype.is_floating_point:
        raise AuditInputError(
            f"{where}: teacher field {key!r} has dtype {value.dtype}; teachers hold real floating-point tensors"
        )
    if not _dense(value):
        raise AuditInputError(
            f"{where}: teacher field {key!r} is a view of {value.untyped_storage().nbytes()} bytes of storage as "
            f"{value.numel()} elements (save a copy: tensor.clone())"
        )
    if not torch.isfinite(value).all():
        raise AuditInputError(f"{where}: teacher field {key!r} contains NaN or inf")
    return value


def _dense(tensor: torch.Tensor) -> bool:
    """Whether the tensor's elements fill its storage exactly, each in a byte range of its own:
    sorted by stride, each dimension's stride is the product of the sizes before it (any order of
    dimensions, so a transposed copy passes; a stride-0 or a gapped view does not)."""
    if tensor.storage_offset() != 0 or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        return False
    expected = 1
    for stride, size in sorted((stride, size) for stride, size in zip(tensor.stride(), tensor.shape) if size > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _temperature(stored, where: str) -> float:
    value = stored
    if isinstance(stored, torch.Tensor):
        tensor = _checked_tensor(stored, "temperature", where)
        value = tensor.item() if tensor.numel() == 1 else None
    # A comparison, not math.isfinite: that raises OverflowError for an integer beyond a float's range.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= sys.float_info.max:
        raise AuditInputError(f"{where}: teacher temperature must be a finite number > 0, got {shown(stored)}")
    return float(value)
