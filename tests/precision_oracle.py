"""Every number of the certificate from docs/mathematics.md, in plain numpy at extended precision,
each with the magnitude that float64 arithmetic can resolve it to.

Nothing here imports ``auditor``. The numbers are computed row by row from the definitions, in
``np.longdouble`` (64-bit significand on x86-64), so their own rounding is far below float64's;
only the two products with S (z = β Sᵀμ and S(q − p)) are float64 BLAS products, for speed:
their error, at most d·2⁻⁵³ times the magnitudes |β||μ|·|S|, is part of the scales below.
Beside each number the oracle gives its *scale*: the size of the float64 values it is computed
from. For a sum of terms of one sign the scale is the number itself; for a difference of near
equal values (the margin when CE ≈ H(p̄), the alignment loss when the witness reproduces the
teacher, the path's margin at t = 0 when p̄ is near uniform) it is the size of the terms, and
no float64 evaluation — ours, the old one, or a float64 oracle — can be trusted beyond
``2⁻⁵³ × scale``. A state is then held to ``|ours − oracle| ≤ tolerance × scale``: relative to
the number wherever float64 allows it, relative to its terms where it does not.
"""

from __future__ import annotations

import numpy as np

from .reference import witness_S

LD = np.longdouble
PATH_TS = [j / 10 for j in range(11)]
PATH_FLOOR = 1e-12
ACTIVE_UNIT_THRESHOLD = 0.01


def _xlogy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a·log b with 0·log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, a * np.log(np.where(b > 0, b, 1)), 0)


def _entropy(p: np.ndarray) -> LD:
    return -_xlogy(p, p).sum()


def numbers(mu, p, K, beta, offset=0, logvar=None, p_view=None, confidence_z=1.6448536269514722):
    """{name: (value, scale)} for every number the certificate state's compute() gives, named as
    flattened ``CertificateNumbers`` fields (``diagnostics.escape_force``, ``per_class[3].count``, …).
    Counts and flags have scale None: they must be equal."""
    mu64, p = np.asarray(mu, np.float64), np.asarray(p, LD)
    mu = mu64.astype(LD)
    n, d = mu.shape
    S = witness_S(K, d, offset)
    out: dict[str, tuple] = {}

    # witness: z = β Sᵀ μ, log q by its definition; |z| sums the magnitudes a float64 product adds
    z = (beta * (mu64 @ S)).astype(LD)
    z_abs = (beta * (np.abs(mu64) @ np.abs(S))).astype(LD)
    z_max = z.max(axis=1, keepdims=True)
    lse = z_max + np.log(np.exp(z - z_max).sum(axis=1, keepdims=True))
    logq = z - lse
    q = np.exp(logq)
    # float64's log q_k is off by about u·(|z_k| + |lse|): the size CE's terms are resolved to
    z_size = z_abs.max(axis=1, keepdims=True) + np.abs(lse)
    ce = -(p * logq).sum(axis=1)
    ce_size = (p * (np.abs(logq) + 2 * z_size)).sum(axis=1)
    h = -_xlogy(p, p).sum(axis=1)
    p_bar = p.mean(axis=0)
    h_bar = _entropy(p_bar)

    out["teacher_marginal_entropy"] = (h_bar, h_bar)
    out["teacher_mean_entropy"] = (h.mean(), h.mean())
    out["mean_cross_entropy"] = (ce.mean(), ce_size.mean())
    out["teacher_information"] = (h_bar - h.mean(), h_bar + h.mean())
    out["alignment_loss"] = (ce.mean() - h.mean(), ce_size.mean() + h.mean())
    out["margin"] = (h_bar - ce.mean(), h_bar + ce_size.mean())
    out["num_samples"] = (n, None)
    out["num_classes"] = (K, None)

    # delta-method standard error: ψ_i = −⟨log p̄, p_i − p̄⟩ − (CE_i − mean CE); its float64 form is
    # a quadratic form of the comoments, resolved to (Σ_j |w_j| sd_j)² plus CE's own rounding
    w = np.append(np.where(p_bar > 0, np.log(np.where(p_bar > 0, p_bar, 1)), 0), 1)
    cols = np.concatenate([p, ce[:, None]], axis=1)
    psi = -(cols - cols.mean(axis=0)) @ w
    sum_psi2 = (psi**2).sum()
    sd = np.sqrt(((cols - cols.mean(axis=0)) ** 2).sum(axis=0))
    sum_psi2_size = (np.abs(w) @ sd) ** 2 + 2 * (np.abs(psi) * ce_size).sum()
    out["margin_std_error²·n(n−1)"] = (sum_psi2, sum_psi2_size)

    # diagnostics
    mu_mean = mu.mean(axis=0)
    mu_var = ((mu - mu_mean) ** 2).mean(axis=0)
    out["diagnostics.max_abs_deviation_from_mean"] = (np.abs(mu - mu_mean).max(), 2 * np.abs(mu).max())
    out["diagnostics.exactly_constant"] = (bool((mu.max(axis=0) == mu.min(axis=0)).all()), None)
    out["diagnostics.active_units"] = (int((mu_var > ACTIVE_UNIT_THRESHOLD).sum()), None)
    for j in range(d):
        out[f"diagnostics.latent_variance[{j}]"] = (mu_var[j], mu_var[j])
    sq_norm = (mu**2).sum(axis=1).mean()
    out["diagnostics.mean_sq_norm"] = (sq_norm, sq_norm)
    if logvar is not None:
        lv = np.asarray(logvar, LD)
        kl = 0.5 * (mu**2 + np.exp(lv) - lv - 1)
        kl_size = 0.5 * (mu**2 + np.exp(lv) + np.abs(lv) + 1)
        out["diagnostics.mean_prior_kl"] = (kl.sum(axis=1).mean(), kl_size.sum(axis=1).mean())
        for j in range(d):
            out[f"diagnostics.prior_kl_per_dim[{j}]"] = (kl[:, j].mean(), kl_size[:, j].mean())
    agree = q.argmax(axis=1) == p.argmax(axis=1)
    out["diagnostics.witness_agreement"] = (agree.mean(), None)
    escape = beta * np.sqrt(((((q - p).astype(np.float64) @ S.T).astype(LD)) ** 2).sum(axis=1))
    # q − p is resolved to about u·(q·(1 + 2|z|) + p) per entry; ‖S‖ = sqrt(K/(K−1))
    escape_size = beta * np.sqrt(K / (K - 1)) * (q * (1 + 2 * z_size) + p).sum(axis=1)
    out["diagnostics.escape_force"] = (escape.mean(), escape.mean() + escape_size.mean())

    # per teacher class (argmax p)
    cls = p.argmax(axis=1)
    q_at = q[np.arange(n), cls]
    for k in range(K):
        rows = cls == k
        count = int(rows.sum())
        out[f"per_class[{k}].count"] = (count, None)
        out[f"per_class[{k}].teacher_mass"] = (p_bar[k], p_bar[k])
        if count:
            out[f"per_class[{k}].mean_teacher_confidence"] = (p[rows].max(axis=1).mean(),) * 2
            out[f"per_class[{k}].witness_agreement"] = (agree[rows].mean(), None)
            loss = (ce - h)[rows].mean()
            out[f"per_class[{k}].mean_alignment_loss"] = (loss, (ce_size + h)[rows].mean())
            out[f"per_class[{k}].mean_witness_prob"] = (q_at[rows].mean(), (q_at * (1 + 2 * z_size[:, 0]))[rows].mean())

    # view gap
    if p_view is not None:
        pv = np.asarray(p_view, LD)
        h_bar_view = _entropy(pv.mean(axis=0))
        tv = 0.5 * np.abs(p - pv).sum(axis=1)
        z_range = z.max(axis=1) - z.min(axis=1)
        ce_view = -(pv * logq).sum(axis=1)
        ce_view_size = (pv * (np.abs(logq) + 2 * z_size)).sum(axis=1)
        bound = abs(h_bar_view - h_bar) + (tv * z_range).mean()
        out["view.bound"] = (bound, h_bar_view + h_bar + (tv * (np.abs(z_range) + 2 * z_size[:, 0])).mean())
        out["view.margin_encoder_view"] = (h_bar_view - ce_view.mean(), h_bar_view + ce_view_size.mean())
        kl_view = (_xlogy(p, p) - _xlogy(p, pv)).sum(axis=1)
        kl_view_size = (np.abs(_xlogy(p, p)) + np.abs(_xlogy(p, pv))).sum(axis=1)
        out["view.mean_kl"] = (kl_view.mean(), kl_view_size.mean())
        out["view.mean_tv"] = (tv.mean(), tv.mean() + 0.5 * (p + pv).sum(axis=1).mean())

    # design: E_T and the margin–energy path on p̃ = max(p, 1e-12)
    logp = np.log(np.maximum(p, PATH_FLOOR))
    ell = logp - logp.mean(axis=1, keepdims=True)
    e_t = (ell**2).sum(axis=1).mean()
    ell_size = np.abs(ell) + np.abs(logp) + np.abs(logp.mean(axis=1, keepdims=True))
    e_t_size = (ell_size**2).sum(axis=1).mean()
    energy = (K - 1) / (K * beta**2) * e_t
    out["design.E_T"] = (e_t, e_t_size)
    out["design.analytic_code_energy"] = (energy, (K - 1) / (K * beta**2) * e_t_size)
    for j, t in enumerate(PATH_TS):
        a = t * ell
        a_max = a.max(axis=1, keepdims=True)
        lse_t = a_max + np.log(np.exp(a - a_max).sum(axis=1, keepdims=True))
        ce_t = (p * (lse_t - a)).sum(axis=1)
        # exp(jΔℓ) formed as a j-th power: each power within about j ulps, on top of ℓ's own rounding
        ce_t_size = (p * (np.abs(lse_t) * (1 + j) + t * ell_size)).sum(axis=1)
        out[f"design.path[{j}].margin"] = (h_bar - ce_t.mean(), h_bar + ce_t_size.mean())
        out[f"design.path[{j}].energy"] = (t * t * energy, t * t * (K - 1) / (K * beta**2) * e_t_size)
    return out


def flatten(numbers) -> dict:
    """A CertificateNumbers (any object with the fields above) as {name: value}, named as ``numbers``
    names them; the standard error as se²·n(n−1), the form whose error the oracle bounds."""
    flat: dict = {}
    for key in ("teacher_marginal_entropy", "teacher_mean_entropy", "mean_cross_entropy", "teacher_information"):
        flat[key] = getattr(numbers, key)
    flat.update(
        alignment_loss=numbers.alignment_loss,
        margin=numbers.margin,
        num_samples=numbers.num_samples,
        num_classes=numbers.num_classes,
    )
    n = numbers.num_samples
    flat["margin_std_error²·n(n−1)"] = numbers.margin_std_error**2 * n * (n - 1)
    for key, value in numbers.diagnostics.items():
        if isinstance(value, list):
            flat.update({f"diagnostics.{key}[{j}]": v for j, v in enumerate(value)})
        elif key not in ("active_unit_threshold", "latent_dim") and value is not None:
            flat[f"diagnostics.{key}"] = value
    for row in numbers.per_class:
        for key, value in row.items():
            if key != "class" and value is not None:
                flat[f"per_class[{row['class']}].{key}"] = value
    for key, value in (numbers.view or {}).items():
        flat[f"view.{key}"] = value
    flat["design.E_T"] = numbers.design["E_T"]
    flat["design.analytic_code_energy"] = numbers.design["analytic_code_energy"]
    for j, point in enumerate(numbers.design["path"]):
        flat[f"design.path[{j}].margin"] = point["margin"]
        flat[f"design.path[{j}].energy"] = point["energy"]
    return flat
