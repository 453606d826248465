"""The pre-training design view (docs/mathematics.md, "the margin-energy path"): what a teacher costs and gives.

For teacher rows p_i the analytic code μ*(p) = ((K−1)/(Kβ))·S ℓ(p) makes the witness reproduce
p exactly. Along μ_t = t·μ*(p_i) the margin runs from H(p̄) − log K (t = 0, the uniform
predictor) to I_T (t = 1) at energy E‖μ_t‖² = t²·((K−1)/(Kβ²))·E_T, E_T = mean ‖ℓ(p_i)‖².

Teacher rows often hold probabilities that underflow to 0 (log p = −∞). Everything here uses
the rows clamped from below at ``PROB_FLOOR`` = 1e-12: ℓ is invariant to rescaling p, so the
analytic code of max(p, 1e-12) reproduces p up to 1e-12 per entry, its margin equals I_T to
within about K·3e-11 nats, and E_T is finite. A teacher's E_T therefore counts at most
log(1e-12)² ≈ 764 per very confident entry — sharper teachers cost more energy, as they should.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import AuditInputError
from .numbers import PATH_PROB_FLOOR
from .state import CertificateState
from .witness import WitnessSpec, analytic_code, analytic_energy, centered_log

PROB_FLOOR = PATH_PROB_FLOOR  # 1e-12, one constant with the certificate's own margin–energy path
DEFAULT_BETA = 2.0
# Prior cost ½E‖μ*‖² (nats per sample) we accept for the full analytic code: a small part of
# the KL a VAE on digits pays anyway (tens of nats at 16 latents).
DEFAULT_ENERGY_BUDGET = 10.0
DEFAULT_TS = tuple(i / 10 for i in range(11))


def checked_probabilities(p) -> np.ndarray:
    """``p`` as an N×K float64 array of teacher rows (N ≥ 1, K ≥ 2)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise AuditInputError(f"teacher probabilities must be an N×K array with N >= 1 and K >= 2, got shape {p.shape}")
    return p


def floored(p: np.ndarray) -> np.ndarray:
    """max(p, PROB_FLOOR): full support, so ℓ(p) and the analytic code are finite."""
    return np.maximum(p, PROB_FLOOR)


def teacher_energy(p) -> float:
    """E_T = (1/N) Σ ‖ℓ(max(p_i, PROB_FLOOR))‖², with ℓ the centred log (witness.centered_log)."""
    ell = centered_log(floored(checked_probabilities(p)))
    return float((ell * ell).sum(axis=1).mean())


def teacher_information(p) -> float:
    """I_T = H(p̄) − (1/N) Σ H(p_i) of teacher rows ``p`` (N×K), computed by the certificate state.

    I_T does not depend on the latent means, so the state is fed zero means on the smallest
    witness for K classes; the entropies are the state's own, never a second copy of them.
    """
    p = torch.as_tensor(np.asarray(p, dtype=np.float64))
    if p.ndim != 2 or p.shape[1] < 2:
        raise AuditInputError(f"teacher probabilities must be an N×K array with K >= 2, got shape {tuple(p.shape)}")
    K = int(p.shape[1])
    state = CertificateState(WitnessSpec(K, K - 1, 1.0))
    state.update(torch.zeros((p.shape[0], K - 1), dtype=torch.float64), p)
    return state.compute().teacher_information


def prior_cost(mean_sq_centered_log: float, num_classes: int, beta: float) -> float:
    """½E‖μ*‖² = ((K−1)/(2Kβ²))·E_T: the analytic code's mean prior cost in nats."""
    return 0.5 * analytic_energy(mean_sq_centered_log, num_classes, beta)


def check_energy_budget(energy_budget: float) -> float:
    if (
        isinstance(energy_budget, bool)
        or not isinstance(energy_budget, (int, float))
        or not math.isfinite(energy_budget)
        or energy_budget <= 0
    ):
        raise AuditInputError(f"--energy-budget must be a finite number of nats > 0, got {energy_budget!r}")
    return float(energy_budget)


def check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise AuditInputError(f"--beta must be a finite number > 0, got {beta!r}")
    return float(beta)


def recommend_beta(mean_sq_centered_log: float, num_classes: int, energy_budget: float) -> float:
    """The smallest β whose full analytic code fits the budget on the prior cost:
    ((K−1)/(2Kβ²))·E_T ≤ budget  ⇔  β ≥ sqrt((K−1)·E_T / (2K·budget)).

    0.0 when E_T = 0 (a teacher that is uniform everywhere: every β > 0 fits, and I_T = 0).
    """
    budget = check_energy_budget(energy_budget)
    K = num_classes
    return math.sqrt((K - 1) * mean_sq_centered_log / (2 * K * budget))


def _check_ts(ts: Sequence[float]) -> list[float]:
    ts = [float(t) for t in ts]
    if not ts:
        raise AuditInputError("the margin–energy path needs at least one t")
    if not all(math.isfinite(t) and t >= 0 for t in ts):
        raise AuditInputError(f"path points t must be finite and >= 0, got {ts}")
    return ts


def design_table(p, beta: float, latent_dim: int, ts: Sequence[float] = DEFAULT_TS, offset: int = 0) -> pd.DataFrame:
    """The margin–energy path: one row per t with the margin of μ_t = t·μ*(p_i).

    Each margin is computed exactly, by feeding the latent means t·analytic_code(p) and the
    teacher rows p through :class:`CertificateState`. Columns: ``t``, ``margin`` (Ĝ),
    ``alignment_loss`` (L), ``energy`` (E‖μ_t‖² = t²·((K−1)/(Kβ²))·E_T) and ``prior_cost``
    (half the energy, nats).
    """
    p = checked_probabilities(p)
    spec = WitnessSpec(p.shape[1], latent_dim, check_beta(beta), offset)
    code = torch.as_tensor(analytic_code(floored(p), spec))
    p_t = torch.as_tensor(p)
    full_energy = analytic_energy(teacher_energy(p), spec.num_classes, spec.beta)
    rows = []
    for t in _check_ts(ts):
        state = CertificateState(spec)
        state.update(t * code, p_t)
        numbers = state.compute()
        rows.append(
            {
                "t": t,
                "margin": numbers.margin,
                "alignment_loss": numbers.alignment_loss,
                "energy": t * t * full_energy,
                "prior_cost": 0.5 * t * t * full_energy,
            }
        )
    return pd.DataFrame(rows, columns=["t", "margin", "alignment_loss", "energy", "prior_cost"])


def design_summary(p, beta: float, latent_dim: int, energy_budget: float = DEFAULT_ENERGY_BUDGET) -> dict:
    """I_T, E_T, the analytic code's energy and prior cost at β, and the β recommended for the budget."""
    p = checked_probabilities(p)
    K = p.shape[1]
    spec = WitnessSpec(K, latent_dim, check_beta(beta))
    e_t = teacher_energy(p)
    cost = prior_cost(e_t, K, spec.beta)
    budget = check_energy_budget(energy_budget)
    return {
        "num_samples": int(p.shape[0]),
        "num_classes": K,
        "latent_dim": latent_dim,
        "beta": spec.beta,
        "teacher_information": teacher_information(p),
        "E_T": e_t,
        "analytic_code_energy": analytic_energy(e_t, K, spec.beta),
        "prior_cost": cost,
        "energy_budget": budget,
        "within_budget": cost <= budget,
        "recommended_beta": recommend_beta(e_t, K, budget),
        "prob_floor": PROB_FLOOR,
    }
