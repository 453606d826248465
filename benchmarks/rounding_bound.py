"""How tight is the margin's rounding bound? The computed Ĝ against Ĝ in exact arithmetic.

    python benchmarks/rounding_bound.py            # 10 to 18 minutes on a busy 2-core machine

Two sweeps, each printing the largest |Ĝ computed − Ĝ exact| / bound (it must stay below 1) and
the range of the bound:

- constant encoders at the analytic code of p̄, so that q = p̄ and Ĝ = 0 exactly: K from 2 to
  200, N up to 20,001 in up to 100 batches, teachers from flat to peaked. Ĝ exact is
  H(p̄) + Σ_k p̄_k log q_k in 50-digit decimals, with q from the constant μ and p̄ from the
  float64 rows, all in decimals.
  Also printed: how many of these runs the old rule (Ĝ ≥ 0 at confidence 0) certified;
- random encoders, latent scales from 1e-3 to 1e4: Ĝ exact from the formulas, every row in
  50-digit decimals (tests/reference.py's exact_margin).

The exact side uses nothing of auditor's; the computed side is CertificateState, fed batch by batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.certificate.state import CertificateState  # noqa: E402
from auditor.certificate.witness import WitnessSpec  # noqa: E402
from tests import reference as ref  # noqa: E402


def computed(mu: np.ndarray, p: np.ndarray, K: int, beta: float, batches: int):
    state = CertificateState(WitnessSpec(K, mu.shape[1], beta))
    for rows in np.array_split(np.arange(len(mu)), batches):
        if len(rows):
            state.update(torch.as_tensor(mu[rows]), torch.as_tensor(p[rows]))
    return state.compute()


def exact_constant_margin(point: np.ndarray, p: np.ndarray, K: int, beta: float) -> float:
    """H(p̄) + Σ_k p̄_k log q_k for the one q of a constant μ = ``point``, in 50-digit decimals."""
    with localcontext() as context:
        context.prec = 50
        log_q = ref.exact_log_witness(point, K, beta)
        p_bar = [sum(map(Decimal, p[:, k].tolist())) / len(p) for k in range(K)]
        return float(-sum(x * x.ln() for x in p_bar if x > 0) + sum(x * lq for x, lq in zip(p_bar, log_q)))


def code_of(p_bar: np.ndarray, d: int, beta: float) -> np.ndarray:
    K = len(p_bar)
    ell = np.log(p_bar) - np.log(p_bar).mean()
    return ((K - 1) / (K * beta)) * ref.witness_S(K, d) @ ell


def constant_sweep(seeds: int) -> None:
    ratios, bounds, old_rule = [], [], 0
    for K in (2, 3, 5, 10, 20, 50, 100, 200):
        for n, batches in ((1, 1), (7, 3), (1000, 4), (1000, 100), (20001, 40)):
            for peak in (0.1, 1.0, 4.0, 8.0):
                for seed in range(seeds):
                    rng = np.random.default_rng([K, n, seed])
                    p = ref.softmax(rng.normal(size=(n, K)) * peak)
                    beta = float(rng.uniform(0.5, 4))
                    point = code_of(p.mean(axis=0), K - 1, beta)
                    numbers = computed(np.tile(point, (n, 1)), p, K, beta, batches)
                    error = abs(numbers.margin - exact_constant_margin(point, p, K, beta))
                    ratios.append(error / numbers.margin_rounding_bound)
                    bounds.append(numbers.margin_rounding_bound)
                    old_rule += numbers.margin >= 0
    print(
        f"constant encoders at the code of p̄: {len(ratios)} runs, max |error| / bound = {max(ratios):.3g}, "
        f"bound from {min(bounds):.2g} to {max(bounds):.2g}; certified by the old rule (Ĝ ≥ 0): {old_rule}"
    )


def random_sweep(seeds: int) -> None:
    ratios, bounds = [], []
    for K in (2, 5, 10, 20):
        for n in (10, 50):
            for scale in (1e-3, 1.0, 30.0, 1e4):
                for seed in range(seeds):
                    rng = np.random.default_rng([K, n, int(scale * 1000), seed])
                    mu = rng.normal(size=(n, K + 1)) * scale
                    p = ref.softmax(rng.normal(size=(n, K)) * 3)
                    beta = float(rng.uniform(0.2, 5))
                    numbers = computed(mu, p, K, beta, int(rng.integers(1, 6)))
                    error = abs(numbers.margin - ref.exact_margin(mu, p, K, beta))
                    ratios.append(error / numbers.margin_rounding_bound)
                    bounds.append(numbers.margin_rounding_bound)
    print(
        f"random encoders: {len(ratios)} runs, max |error| / bound = {max(ratios):.3g}, "
        f"bound from {min(bounds):.2g} to {max(bounds):.2g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    constant_sweep(args.seeds)
    random_sweep(args.seeds)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
