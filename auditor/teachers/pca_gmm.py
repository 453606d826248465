"""The PCA → diagonal-GMM teacher: the module computing T(·|x), and the ``teacher.pt`` dict it is
saved as (docs/formats.md), validated field by field before a module is built from it.

Reading and writing the file itself is :mod:`auditor.sources.teachers.files`.

**How the log-joint is evaluated on a CPU.** The definition, for each of the B×K pairs of a
row and a component, sums r terms (y_j − m_kj)²/v_kj: a B×K×r broadcast whose cost grows with
K (measured on a 2-core CPU, 100,000 rows, K = 200: 4.4 s against 0.8 s for the encoder). The
same quadratic, expanded,

    Σ_j (y_j − m_kj)²/v_kj = (y∘y)·a_k − 2 y·b_k + c_k,   a = 1/v, b = m/v, c_k = Σ_j m_kj²/v_kj,

is two B×r×K matrix products. It loses digits where y and m_k are large against √v_k but
y − m_k is not (a tight component far from the PCA origin): y²/v ~ 1e7 cancelling to O(1)
moved a posterior by 3e-10 on such a teacher. So the expanded form comes with an error bound
per entry, and the few entries whose error could reach the posterior are recomputed by the
definition (its r terms summed in their own order, which the bound allows for):

- the expanded value and the definition's both differ from the exact log-joint by at most
  D = κ·(A_k + c′_k), with A_k = (y∘y)·a_k, c′_k = c_k + Σ_j |log 2πv_kj| + |log w_k| and
  κ = (2r + 8)·2⁻⁵³ (each sum of r products is within γ_r of the sum of its terms' magnitudes,
  and |y_j m_kj| ≤ (y_j² + m_kj²)/2);
- errors |δ_j| ≤ D_j turn the posterior p at temperature τ into p_k e^{δ_k/τ} / Σ_j p_j e^{δ_j/τ},
  so |Δp_k| ≤ (p_k (e^{D_k/τ} − 1) + p_k σ) / (1 − σ) with σ = Σ_j p_j (e^{D_j/τ} − 1). An entry
  is left as expanded when P_j (e^{D_j/τ} − 1) ≤ ε/(2K), P_j ≥ p_j; a row is left whole when
  every D_j/τ ≤ ε/2. Then σ ≤ ε and |Δp_k| ≤ 1.5 ε (to a relative O(ε)) for every entry: with
  ε = POSTERIOR_TOLERANCE / 1.5, the posterior is the definition's to 7.5e-13;
- the test is made per row, with one bound D ≥ D_j for all of the row's entries (A_k ≤ (y∘y)·a⁺
  with a⁺_j = max_k a_kj, and c′ ≤ max_k c′_k): P_j ≤ exp((L̂_j − L̂_m + 2D)/τ) for the row's
  largest L̂_m, so the entries that need the definition are those with
  L̂_j > L̂_m − 2D + τ·log(ε / (2K (e^{D/τ} − 1))), a threshold per row. It repairs a superset of
  what the test per entry would (on a K = 200 teacher fitted to the benchmark's data, 15.6
  entries a row at τ = 1 where it repaired 14.4) at two passes over the B×K log-joint instead of
  a dozen;
- the entries above the threshold are recomputed by the definition: at large K in one compiled
  loop (:mod:`.repair_kernel`); below that by torch, gathering each pair's m, v and y rows (and
  the whole batch by the definition if more than an eighth of its entries need it); with a
  gradient asked for, the whole batch is the definition's.

Off a CPU the definition is used as it is: a device has the flops for the broadcast, and the
repair's data-dependent choice would make every batch wait for the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..certificate.json_input import is_positive_finite
from ..compiled import pays_off
from ..errors import AuditInputError, shown

TEACHER_FORMAT = "vae-audit-teacher/1"
PCA_GMM_KEYS = ("pca_mean", "pca_components", "log_weights", "means", "variances", "temperature")
# The largest difference from the definition's posterior that the expanded form may leave, per entry.
POSTERIOR_TOLERANCE = 7.5e-13
_UNIT_ROUNDOFF = 2.0**-53
REPAIR_CHUNK = 4096  # pairs a step: their gathered rows, 4 × 640 KiB at r = 20, stay in cache; faster than 2048 or 8192


class PcaGmmTeacher(nn.Module):
    """T(k|x) = softmax_k[(log w_k + Σ_j log N(y_j; m_kj, v_kj)) / τ] with y = (x − mean) @ Cᵀ.

    Computed in float64 so that the posterior matches scikit-learn's to rounding; on a CPU by
    the expanded quadratic with its certified repair (module docstring).
    """

    kind = "pca-gmm"
    # Its forward reads its buffers and writes nothing else, so the audit may run it on its update
    # thread while the forward passes' thread runs the next batch (auditor/audit/forward.py).
    safe_on_any_thread = True
    # Registered as buffers in __init__; declared here so that the type checker knows they are tensors.
    pca_mean: torch.Tensor
    pca_components: torch.Tensor
    log_weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    log_2pi_var: torch.Tensor
    inv_var_t: torch.Tensor
    minus_2_mean_over_var_t: torch.Tensor
    constant: torch.Tensor
    max_inv_var: torch.Tensor
    max_error_scale: torch.Tensor

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
        # The expanded form's constants (module docstring), derived once; not part of the file.
        inv_var = 1.0 / self.variances
        mean_over_var = self.means * inv_var
        c = (self.means * mean_over_var).sum(dim=1)
        log_2pi_var = torch.log(2 * math.pi * self.variances)
        derived = {
            "log_2pi_var": log_2pi_var,  # K×r, as the definition uses it
            "inv_var_t": inv_var.T.contiguous(),  # r×K
            "minus_2_mean_over_var_t": (-2.0 * mean_over_var).T.contiguous(),  # r×K (×2 is exact)
            "constant": self.log_weights - 0.5 * (c + log_2pi_var.sum(dim=1)),  # K
            # the repair's per-row bound: a⁺_j = max_k 1/v_kj and max_k c′_k (module docstring)
            "max_inv_var": inv_var.amax(dim=0),  # r
            "max_error_scale": (c + log_2pi_var.abs().sum(dim=1) + self.log_weights.abs()).max(),
        }
        for name, value in derived.items():
            self.register_buffer(name, value, persistent=False)
        self.kappa = (2 * self.means.shape[1] + 8) * _UNIT_ROUNDOFF
        # the repair's compiled loop at large K (repair_kernel); torch's gathers below that
        self.compiled_repair = pays_off(self.num_classes)

    @property
    def num_classes(self) -> int:
        return int(self.log_weights.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.pca_mean.shape[0])

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """y = (x − mean) @ Cᵀ in float64, B×r, with the definition's bits: the repair relies on
        them. Cᵀ stays a transposed view: a contiguous copy takes another BLAS path and changes y
        in its last bits. x − mean is formed in the float64 copy of x itself: a second batch-sized
        buffer per batch cost 30 page faults a batch (1024 × 784 rows; the allocator returns
        such buffers to the system), 0.07 s per 100,000 rows."""
        rows = x.reshape(x.shape[0], -1)
        return rows.to(torch.float64, copy=True).sub_(self.pca_mean) @ self.pca_components.T

    def log_joint(self, x: torch.Tensor, temperatures: Sequence[float] | None = None) -> torch.Tensor:
        """log w_k + Σ_j log N(y_j; m_kj, v_kj), B×K (before the temperature).

        On a CPU, the entries that could move the posterior at any of ``temperatures`` (default:
        the teacher's own) by more than POSTERIOR_TOLERANCE are the definition's; the others are
        within κ·(A + c′) of it (module docstring). On another device, the definition.
        """
        y = self.project(x)
        if y.device.type != "cpu":
            return self._definition(y)
        with torch.autocast(device_type="cpu", enabled=False):  # the expansion needs float64 products
            y = y.to(torch.float64)
            y_squared = y * y
            expanded = torch.addmm(y_squared @ self.inv_var_t, y, self.minus_2_mean_over_var_t)
            expanded.mul_(-0.5).add_(self.constant)
        return self._repaired(y, expanded, y_squared, tuple(temperatures or (self.temperature,)))

    def _definition(self, y: torch.Tensor) -> torch.Tensor:
        """The log-joint as docs/formats.md writes it: a B×K×r broadcast."""
        diff2 = (y[:, None, :] - self.means[None]) ** 2 / self.variances[None]
        return self.log_weights[None] + -0.5 * (diff2 + self.log_2pi_var[None]).sum(dim=2)

    def _repaired(
        self, y: torch.Tensor, expanded: torch.Tensor, y_squared: torch.Tensor, temperatures: Sequence[float]
    ) -> torch.Tensor:
        """``expanded`` with every entry that could matter at one of ``temperatures`` replaced by the
        definition's. (On a CPU only. The per-row bound is numpy's, on the tensors' own memory: its
        dozen operations on vectors of B values cost a few microseconds each where torch's cost
        10–20; then the entries are found and recomputed, see the module docstring.)"""
        batch, K = expanded.shape
        eps = POSTERIOR_TOLERANCE / 1.5
        # numpy reads detached views: the choice of entries needs no gradient
        bound = torch.mv(y_squared.detach(), self.max_inv_var).numpy()
        bound = (bound + self.max_error_scale.item()) * self.kappa  # D per row
        top = expanded.detach().amax(dim=1).numpy()  # L̂_m per row (NaN if the row holds one)
        if not (np.isfinite(bound).all() and np.isfinite(top).all()):
            return self._definition(y)  # an overflow or a NaN: no bound holds, the definition decides
        cut = np.full(batch, np.inf)  # rows with every D/τ ≤ ε/2 are left whole
        for tau in temperatures:
            scaled = bound / tau
            with np.errstate(divide="ignore", over="ignore"):  # e^{D/τ} − 1 of 0 or inf: a cut of ±inf, as it should be
                # L̂_m − 2D + τ·log(ε/(2K)) − τ·log(e^{D/τ} − 1)
                threshold = top - 2 * bound + tau * (math.log(0.5 * eps / K) - np.log(np.expm1(scaled)))
            np.minimum(cut, np.where(scaled > 0.5 * eps, threshold, np.inf), out=cut)
        if np.isinf(cut).all():  # the usual case for a teacher of broad components
            return expanded
        if expanded.requires_grad:  # a gradient is asked for: the definition, differentiable as it is
            return self._definition(y)
        if self.compiled_repair:
            from .repair_kernel import repair_above  # numba's import and the cached loop: on first use only

            repair_above(
                expanded.numpy(),
                cut,
                y.numpy(),
                self.means.numpy(),
                self.variances.numpy(),
                self.log_2pi_var.numpy(),
                self.log_weights.numpy(),
            )
            return expanded
        flat = np.flatnonzero(expanded.numpy() > cut[:, None])
        if flat.size > batch * K // 8:
            return self._definition(y)
        # The definition, pair by pair: each pair gathers its component's m, v and log 2πv and its
        # row of y, REPAIR_CHUNK pairs at a time so that the gathered rows stay in the core's cache.
        entries = expanded.view(-1)
        for begin in range(0, flat.size, REPAIR_CHUNK):
            at = flat[begin : begin + REPAIR_CHUNK]
            rows, cols = torch.from_numpy(at // K), torch.from_numpy(at % K)
            terms = y.index_select(0, rows).sub_(self.means.index_select(0, cols)).pow_(2)
            terms.div_(self.variances.index_select(0, cols)).add_(self.log_2pi_var.index_select(0, cols))
            entries[torch.from_numpy(at)] = self.log_weights.index_select(0, cols) + -0.5 * terms.sum(dim=1)
        return expanded

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
    if not is_positive_finite(value):
        raise AuditInputError(f"{where}: teacher temperature must be a finite number > 0, got {shown(stored)}")
    return float(value)
