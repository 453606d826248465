"""The numbers of the certificate (docs/mathematics.md) from the sums a :class:`CertificateState` keeps.

Ĝ, I_T, L, the delta-method standard error of Ĝ, the diagnostics, the per-class table, the view
gap and the margin–energy path are all closed-form functions of those sums; this module holds
the formulas, so that the state only accumulates and the verdict only compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from ..errors import AuditInputError
from .rounding import margin_rounding_bound
from .witness import WitnessSpec, analytic_energy

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active when Var_x E[z_d | x] > 0.01
# Margin–energy path (docs/mathematics.md): μ_t = t·μ*(p) at these t; its witness prediction is ∝ p^t.
PATH_TS = tuple(i / 10 for i in range(11))
assert all(math.isclose(t, j * PATH_TS[1]) for j, t in enumerate(PATH_TS)), (
    "the state's update needs evenly spaced t from 0"
)
# The analytic code is taken of max(p, floor), as in auditor.certificate.design (PROB_FLOOR): ℓ stays
# finite when a teacher probability underflows to 0, and the path matches `audit design` exactly.
PATH_PROB_FLOOR = 1e-12


def _entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


@dataclass
class CertificateNumbers:
    num_samples: int
    num_classes: int
    teacher_information: float  # I_T
    alignment_loss: float  # L
    margin: float  # Ĝ = I_T − L
    margin_std_error: float | None  # sqrt(var ψ / N); None when N < 2
    margin_rounding_bound: float  # what float64 rounding (and rows summing to < 1) can add to Ĝ
    teacher_marginal_entropy: float  # H(p̄)
    teacher_mean_entropy: float  # mean H(p_i)
    mean_cross_entropy: float
    diagnostics: dict
    per_class: list[dict]
    view: dict | None = field(default=None)
    design: dict | None = field(default=None)  # E_T and the margin–energy path

    def margin_lcb(self, confidence: float) -> float | None:
        """Delta-method lower confidence bound Ĝ − z·se (confidence 0 means the exact audit-set margin)."""
        z = confidence_z(confidence)
        if z == 0.0:
            return self.margin
        if self.margin_std_error is None:
            return None
        return self.margin - z * self.margin_std_error


def confidence_z(confidence: float) -> float:
    if not (0.0 <= confidence < 1.0):
        raise AuditInputError(f"--confidence must be in [0, 1), got {confidence}")
    return max(0.0, float(norm.ppf(confidence))) if confidence > 0 else 0.0


def logit_scale(v: dict[str, np.ndarray], spec: WitnessSpec) -> float:
    """Z = β·‖w‖ with w_j = max_i |μ_ij| over the witness rows: no witness logit |β(Sᵀμ_i)_k| exceeds it
    (the columns of S have unit norm). Scaled by its largest entry, so that only a Z beyond float64
    itself overflows."""
    rows = slice(spec.offset, spec.offset + spec.num_classes - 1)
    w = np.maximum(np.abs(v["min_mu"][rows]), np.abs(v["max_mu"][rows]))
    top = float(w.max(initial=0.0))
    return spec.beta * top * float(np.linalg.norm(w / top)) if top > 0 else 0.0


def numbers_from_state(v: dict[str, np.ndarray], spec: WitnessSpec, with_view: bool) -> CertificateNumbers:
    """The numbers, or AuditInputError when float64 cannot hold one of them (no warning is printed:
    an overflow is refused with its reason instead)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        numbers = _numbers(v, spec, with_view)
    _refuse_overflow(numbers, v, spec)
    return numbers


def _numbers(v: dict[str, np.ndarray], spec: WitnessSpec, with_view: bool) -> CertificateNumbers:
    K = spec.num_classes
    n = float(v["p_ce.n"])
    p_bar, mean_ce = v["p_ce.mean"][:K], float(v["p_ce.mean"][K])
    m2 = v["p_ce.m2"]
    h_bar = _entropy(p_bar)
    mean_h = float(v["sum_h"]) / n
    margin = h_bar - mean_ce

    # Influence ψ_i = −⟨w, p_i − p̄⟩ − (CE_i − mean CE) with w = log p̄, so Σψ² is the quadratic
    # form of the centred (p, CE) comoment matrix in the vector (w, 1). Classes with p̄_k = 0
    # have p_ik = 0 for every i, so their log p̄ never contributes.
    w = np.where(p_bar > 0, np.log(np.where(p_bar > 0, p_bar, 1.0)), 0.0)
    u = np.append(w, 1.0)
    sum_psi2 = float(u @ m2 @ u)
    std_error = math.sqrt(max(sum_psi2, 0.0) / (n - 1) / n) if n >= 2 else None

    mu_mean = v["mu.mean"]
    mu_var = v["mu.m2"] / n
    max_dev = float(np.max(np.maximum(v["max_mu"] - mu_mean, mu_mean - v["min_mu"])))
    has_logvar = float(v["n_logvar"]) == n
    diagnostics = {
        "max_abs_deviation_from_mean": max_dev,
        "exactly_constant": bool(np.all(v["max_mu"] == v["min_mu"])),
        "active_units": int(np.sum(mu_var > ACTIVE_UNIT_THRESHOLD)),
        "active_unit_threshold": ACTIVE_UNIT_THRESHOLD,
        "latent_dim": spec.latent_dim,
        "latent_variance": mu_var.tolist(),
        "mean_sq_norm": float((mu_var + mu_mean**2).sum()),
        "mean_prior_kl": float(v["sum_prior_kl"].sum()) / n if has_logvar else None,
        "prior_kl_per_dim": (v["sum_prior_kl"] / n).tolist() if has_logvar else None,
        "witness_agreement": float(v["sum_agree"]) / n,
        "escape_force": float(v["sum_escape"]) / n,
    }

    cs = v["class_stats"]
    per_class = []
    for k in range(spec.num_classes):
        count = cs[0, k]
        per_class.append(
            {
                "class": k,
                "count": int(count),
                "teacher_mass": float(p_bar[k]),
                "mean_teacher_confidence": float(cs[1, k] / count) if count else None,
                "witness_agreement": float(cs[2, k] / count) if count else None,
                "mean_alignment_loss": float(cs[3, k] / count) if count else None,
                "mean_witness_prob": float(cs[4, k] / count) if count else None,
            }
        )

    view = None
    if with_view:
        h_bar_view = _entropy(v["sum_p_view"] / n)
        bound = abs(h_bar_view - h_bar) + float(v["sum_tv_range"]) / n
        view = {
            "bound": bound,
            "margin_encoder_view": h_bar_view - float(v["sum_ce_view"]) / n,
            "mean_kl": float(v["sum_kl_view"]) / n,
            "mean_tv": float(v["sum_tv"]) / n,
        }

    code_energy = analytic_energy(float(v["sum_sq_centered_log"]) / n, K, spec.beta)
    design = {
        "E_T": float(v["sum_sq_centered_log"]) / n,
        "prob_floor": PATH_PROB_FLOOR,
        "analytic_code_energy": code_energy,
        "path": [
            {"t": t, "margin": h_bar - float(ce_t) / n, "energy": t * t * code_energy}
            for t, ce_t in zip(PATH_TS, v["path_ce"])
        ],
    }

    rounding = margin_rounding_bound(K, int(n), h_bar, mean_ce, float(p_bar.sum()), logit_scale(v, spec))
    return CertificateNumbers(
        num_samples=int(n),
        num_classes=spec.num_classes,
        teacher_information=h_bar - mean_h,
        alignment_loss=mean_ce - mean_h,
        margin=margin,
        margin_std_error=std_error,
        margin_rounding_bound=rounding,
        teacher_marginal_entropy=h_bar,
        teacher_mean_entropy=mean_h,
        mean_cross_entropy=mean_ce,
        diagnostics=diagnostics,
        per_class=per_class,
        view=view,
        design=design,
    )


def _nonfinite(value, where: str) -> list[str]:
    """Names of the float values in a nest of dicts and lists that are NaN or ±inf."""
    if isinstance(value, dict):
        return [name for key, item in value.items() for name in _nonfinite(item, f"{where}.{key}".lstrip("."))]
    if isinstance(value, list):
        return [name for i, item in enumerate(value) for name in _nonfinite(item, f"{where}[{i}]")]
    return [where] if isinstance(value, float) and not math.isfinite(value) else []


def _refuse_overflow(numbers: CertificateNumbers, v: dict[str, np.ndarray], spec: WitnessSpec) -> None:
    """Refuse, rather than write as null, a number that float64 could not hold.

    Inputs are finite when this runs (the state refuses NaN and inf); what can still overflow is
    a square or a product of huge latent means, β or log-variances: E‖μ‖² beyond 1e308 for
    |μ| > 1e154, the margin's variance for witness logits beyond 1e154, the analytic code's
    energy (K−1)/(Kβ²)·E_T for β < 1e-150. A certificate holding null there would not say why.
    """
    fields = {key: value for key, value in vars(numbers).items() if key not in ("num_samples", "num_classes")}
    bad = _nonfinite(fields, "")
    if not bad:
        return
    largest = float(max(np.abs(v["min_mu"]).max(initial=0.0), np.abs(v["max_mu"]).max(initial=0.0)))
    raise AuditInputError(
        f"the numbers overflow float64 ({', '.join(bad[:4])}{', …' if len(bad) > 4 else ''}): the latent means "
        f"reach |μ| = {largest:.3g} and β = {spec.beta:g} (witness logits up to {logit_scale(v, spec):.3g}); "
        "keep |μ|, β·|μ| and 1/β well below 1e150"
    )
