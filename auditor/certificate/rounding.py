"""How far float64 rounding can move the computed margin Ĝ: a bound the verdict must clear.

A constant encoder has Ĝ ≤ 0 in exact arithmetic (docs/mathematics.md), but the computed Ĝ of a
constant encoder whose witness prediction is p̄ itself is 0 plus rounding: +4.4e-16 once
certified μ = 0 with a uniform teacher. The verdict therefore asks for LCB > δ + bound, where
the bound covers |Ĝ_computed − Ĝ_exact| for Ĝ = H(p̄) − mean CE as :class:`CertificateState`
computes it, plus the one way the inputs can push a constant encoder's Ĝ above 0: teacher rows
that sum to s_i < 1 (the state accepts |s_i − 1| ≤ 1e-4, the rounding of a float32 softmax). For
constant q, Ĝ = Σ_k p̄_k log(q_k/p̄_k) ≤ Σ_k (q_k − p̄_k) ≤ 1 − s̄, s̄ = Σ_k p̄_k, so the mean row-sum
deficit max(0, 1 − s̄) is added: exactly what the rows give, not the whole tolerance, and 0 for
rows that sum to 1, so no existing certificate's numbers change.

The derivation is in docs/mathematics.md ("Rounding"); in short, with u = 2⁻⁵³,
γ(n) = n·u/(1 − n·u), φ = 8u for one exp or log (vectorised libraries promise ≤ 4 ulp), ρ the
relative error of a streamed mean over N rows of non-negative values (batch sums and Chan
merges, whatever the batching: at most 2N merges) and Z ≥ max_i |z_ik| the largest witness logit:

    ρ = γ(N) + (2N + 3)·u
    E = (γ(K) + φ)·H                                     evaluating H(p̄)
      + ρ·(H + s̄) + 6u·K·(ln N + 1.5)                     the error of p̄, through |log p̄_k + 1|
      + (γ(K) + 2u + ρ)·C                                 each CE_i's K-term sum, and its mean
      + s̄·(γ(2K) + φ·(1 + ln K) + 6γ(K + 12)·Z)            each log q_ik: logits, log-sum-exp
      + 12u·(ln K + 2Z)                                   Chan's merges, against the largest CE_i
      + u·(H + C)                                         the last subtraction
    bound = 2E + max(0, 1 − s̄) + (γ(K) + ρ)·s̄ + 6u·K

with H = H(p̄) and C = mean CE as computed. E is first order in u; the factor 2 covers the
neglected terms, which are smaller by a factor (N + K + d)·u < 1e-6 for N < 10⁹.
"""

from __future__ import annotations

import math

UNIT_ROUNDOFF = 2.0**-53
ELEMENTARY_FUNCTION_ERROR = 8 * UNIT_ROUNDOFF  # one exp or log: ≤ 4 ulp


def _gamma(n: float) -> float:
    """Higham's γ_n; infinite where n·u is no longer small (no such audit fits in memory)."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF) if n * UNIT_ROUNDOFF < 0.5 else math.inf


def margin_rounding_bound(
    num_classes: int,
    num_samples: int,
    marginal_entropy: float,
    mean_cross_entropy: float,
    teacher_mass: float,
    logit_scale: float,
) -> float:
    """The bound above, in nats, for a state's K, N, H(p̄), mean CE, s̄ = Σ_k p̄_k and logit scale Z.

    Z is any upper bound on |z_ik| = |β·(Sᵀμ_i)_k|; ``logit_scale = 0`` gives the part that does not
    depend on μ, a floor every recorded bound must reach.
    """
    u, phi = UNIT_ROUNDOFF, ELEMENTARY_FUNCTION_ERROR
    K, N = num_classes, max(num_samples, 1)
    H, C, s, Z = marginal_entropy, mean_cross_entropy, teacher_mass, logit_scale
    rho = _gamma(N) + (2 * N + 3) * u
    first_order = (
        (_gamma(K) + phi) * H
        + rho * (H + s)
        + 6 * u * K * (math.log(N) + 1.5)
        + (_gamma(K) + 2 * u + rho) * C
        + s * (_gamma(2 * K) + phi * (1 + math.log(K)) + 6 * _gamma(K + 12) * Z)
        + 12 * u * (math.log(K) + 2 * Z)
        + u * (H + C)
    )
    return 2 * first_order + max(0.0, 1.0 - s) + (_gamma(K) + rho) * s + 6 * u * K
