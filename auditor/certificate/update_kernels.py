"""The certificate update's arithmetic on a CPU, fused into compiled loops.

On a device, :class:`~auditor.certificate.state.CertificateState` writes the update as torch
operations, each a pass over a B×K float64 batch: about seventy of them. On a CPU each pass
reads its operands from memory the last pass has just pushed out of the core's cache (a
1024×200 batch is 1.6 MB; the core's L2 holds 1 MB), so at K = 200 the passes took 7.2 ms per
1024 rows where their arithmetic needs a fraction of that (2-core AMD EPYC, one thread). Here
each row is read once or twice while it is in the cache: the witness's logits, its softmax,
the cross-entropy, the teacher's entropy, both arg-maxes, the escape norm, the per-class sums
and the margin–energy path's power sums; then μ's and log σ²'s column sums, extremes and
centred squares. The exponentials and the logarithms stay numpy's (vectorised: a scalar libm
call per entry would cost more than the passes it saves), between the loops. The update took
4.7 ms per 1024 rows so. The state uses these loops on a CPU from 64 classes, where they pay for
loading numba (:mod:`auditor.compiled`); they release the GIL.

Each loop does the arithmetic that the torch form of the update does, in the same order
along a row where it can (the cumulative sums); sums over many terms are added in another
order, which moves the certificate's numbers by rounding only (tests/test_update_kernels.py
compares the two forms, and tests/test_state_precision.py holds both to the oracle).
"""

from __future__ import annotations

import math

import numpy as np

from ..compiled import compiled

# Columns of the per-row results of row_statistics.
CE, ENTROPY, ESCAPE, SQ_CENTRED_LOG, P_DOT_CENTRED_LOG, P_SUM, P_MIN, Z_RANGE = range(8)
ROW_RESULTS = 8
# Rows of the per-class sums (the state's class_stats): count, Σ max p, Σ agreement, Σ KL(p‖q), Σ q_k.
CLASS_SUMS = 5


@compiled()
def witness_logits_shifted(mu, offset, helmert, out):
    """``out`` (B×K) = z − max_k z per row, z = β Sᵀμ by the Helmert structure of S.

    With g_j = μ_(offset+j−1)·helmert_(j−1) and G_k = g_1 + … + g_k: z_1 = G_(K−1),
    z_k = G_(K−1) − (G_(k−1) + (k−1)·g_(k−1)) and z_K = −(K−1)·g_(K−1), as
    ``CertificateState._witness_logits`` (whose docstring derives it) computes them.
    """
    n, K = out.shape
    for i in range(n):
        # One pass for the prefix sums, keeping each column's G_(k−1) + (k−1)·g_(k−1) and the least
        # of them: max_k (G − m_k) is G − min_k m_k exactly, as rounding a difference is monotonic.
        prefix = 0.0
        least = math.inf
        for k in range(1, K - 1):  # 0-based column k: 1-based k + 1, whose g is g_k
            g = mu[i, offset + k - 1] * helmert[k - 1]
            prefix += g
            middle = prefix + g * k
            out[i, k] = middle
            least = middle if middle < least else least
        g_last = mu[i, offset + K - 2] * helmert[K - 2]
        total = prefix + g_last  # G_(K−1), the same sums in the same order as a cumsum's
        last = -(K - 1) * g_last
        top = max(total, last)
        if K > 2:
            top = max(top, total - least)
        out[i, 0] = total - top
        for k in range(1, K - 1):
            out[i, k] = (total - out[i, k]) - top
        out[i, K - 1] = last - top


@compiled(fastmath={"reassoc"})
def row_statistics(p, log_p, shifted, exp_shifted, unit_helmert, log_floor, delta, p_ce, step, rows, class_sums):
    """The per-row numbers of one update, from the teacher's p and log p, the shifted logits and
    their exponentials (all B×K).

    Writes ``rows`` (B×ROW_RESULTS: CE, H, ‖S(q − p)‖, ‖ℓ‖², p·ℓ, Σp, min p, z range, where
    ℓ = log max(p, floor) centred along the row), ``p_ce`` (B×(K+1): p, then CE), ``step``
    (B×K: Δ·ℓ, whose exponentials give the path's powers), ``shifted`` (turned into log q) and
    adds the per-class sums of the rows into ``class_sums``. NaN in log p (a bad row, refused
    later) stays NaN in ℓ, as torch's clamp leaves it; H leaves NaN terms out, as torch's nansum.

    A row is read by four loops while it is in the core's L1 cache; the sums may be reassociated
    (``fastmath={"reassoc"}``), so that the loops without a branch or a running prefix vectorise
    instead of waiting on one addition after another (0.97 → 0.74 ms per 1024 rows at K = 200).
    """
    n, K = p.shape
    for i in range(n):
        norm = 0.0
        for k in range(K):
            norm += exp_shifted[i, k]
        log_norm = math.log(norm)
        inverse = 1.0 / norm
        ce = 0.0
        entropy = 0.0
        p_sum = 0.0
        p_min = math.inf
        log_sum = 0.0
        lowest = 0.0
        for k in range(K):
            pk = p[i, k]
            lowest = shifted[i, k] if shifted[i, k] < lowest else lowest
            log_q = shifted[i, k] - log_norm
            shifted[i, k] = log_q
            ce -= pk * log_q
            term = pk * log_p[i, k]
            entropy -= 0.0 if math.isnan(term) else term
            p_sum += pk
            p_min = pk if pk < p_min else p_min
            p_ce[i, k] = pk
            log_sum += log_p[i, k] if not log_p[i, k] < log_floor else log_floor
        p_ce[i, K] = ce
        teacher_class = 0
        p_top = -math.inf
        witness_class = 0
        q_top = -math.inf
        prefix = 0.0
        escape = 0.0
        for k in range(K):
            if p[i, k] > p_top:  # the first index on ties, as numpy's argmax
                p_top, teacher_class = p[i, k], k
            q = exp_shifted[i, k] * inverse
            if q > q_top:
                q_top, witness_class = q, k
            x = q - p[i, k]
            if k > 0:  # Helmert row k: (x_1 + … + x_k − k·x_(k+1)) / √(k(k+1))
                h = (prefix - k * x) * unit_helmert[k - 1]
                escape += h * h
            prefix += x
        log_mean = log_sum / K
        sq = 0.0
        p_dot = 0.0
        for k in range(K):
            centred = (log_p[i, k] if not log_p[i, k] < log_floor else log_floor) - log_mean
            sq += centred * centred
            p_dot += p[i, k] * centred
            step[i, k] = delta * centred
        rows[i, CE] = ce
        rows[i, ENTROPY] = entropy
        rows[i, ESCAPE] = math.sqrt(escape)
        rows[i, SQ_CENTRED_LOG] = sq
        rows[i, P_DOT_CENTRED_LOG] = p_dot
        rows[i, P_SUM] = p_sum  # NaN when an entry is: min() need not see it, the sum does
        rows[i, P_MIN] = p_min
        rows[i, Z_RANGE] = -lowest
        class_sums[0, teacher_class] += 1.0
        class_sums[1, teacher_class] += p[i, teacher_class]
        class_sums[2, teacher_class] += 1.0 if witness_class == teacher_class else 0.0
        class_sums[3, teacher_class] += ce - entropy
        class_sums[4, teacher_class] += exp_shifted[i, teacher_class] * inverse


@compiled(fastmath={"reassoc"})
def power_sums(powers, out):
    """``out[i, j]`` = Σ_k e_ik^(j+1) for e = ``powers`` (B×K, positive), j < out's columns.

    Each power is the previous one times e (rounding grows by one ulp a power, as the torch
    form's repeated products); the sums are reassociated so that they vectorise: their terms
    are positive, so the order moves them by rounding only.
    """
    n, K = powers.shape
    row = np.empty(K)
    for i in range(n):
        for k in range(K):
            row[k] = powers[i, k]
        for j in range(out.shape[1]):
            total = 0.0
            for k in range(K):
                total += row[k]
            out[i, j] = total
            for k in range(K):
                row[k] *= powers[i, k]


@compiled()
def column_statistics(mu, deviations, lows, highs):
    """Add each column's sum of deviations from the first row of ``mu`` (B×d) into ``deviations``
    and fold its least and largest values into ``lows`` and ``highs``. The mean is then the first
    row plus the mean deviation: exactly the value of a constant column, which a plain sum over n
    would move by rounding. (NaN is not folded in; the state counts such rows apart.)"""
    n, d = mu.shape
    for i in range(n):
        for j in range(d):
            x = mu[i, j]
            deviations[j] += x - mu[0, j]
            lows[j] = x if x < lows[j] else lows[j]
            highs[j] = x if x > highs[j] else highs[j]


@compiled()
def centred_squares(mu, mean, out):
    """Add Σ_i (mu_ij − mean_j)² into ``out[j]``: the batch's centred second moments."""
    n, d = mu.shape
    for i in range(n):
        for j in range(d):
            diff = mu[i, j] - mean[j]
            out[j] += diff * diff


@compiled()
def prior_kl_sums(mu, logvar, expm1_logvar, out):
    """Add Σ_i (expm1(log σ²) − log σ² + μ²) into ``out[j]``: twice the KL to N(0, 1) per
    dimension, with σ² − 1 as expm1 so that a collapsed dimension's tiny terms keep their digits."""
    n, d = mu.shape
    for i in range(n):
        for j in range(d):
            out[j] += (expm1_logvar[i, j] - logvar[i, j]) + mu[i, j] * mu[i, j]
