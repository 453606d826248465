"""The post-hoc predictability baseline: a probe fitted on μ after training. **Not the certificate.**

A multinomial logistic regression (scikit-learn, lbfgs, L2 with C = 1, on standardised means) from
the latent means μ(x) of the training split to the teacher's most probable class, fitted after
training and scored on the test split:

- ``probe_accuracy``: how often the probe's class is the teacher's most probable one;
- ``probe_cross_entropy``: (1/N) Σ CE(p_i, probe(μ_i)), the teacher's probabilities under the probe;
- ``probe_margin``: H(p̄) − that cross-entropy, the certificate's margin with the fitted probe in
  place of the raw witness.

A probe is fitted to the means, so it reads out the teacher wherever the means still carry it,
whatever the training did; the certificate uses the raw witness, which nothing was fitted to. A
model can score well here and fail the certificate; only the certificate proves that μ is not
constant without a fitted decoder. Tables print these columns apart from the certificate's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..sources.arrays import row_ranges
from ..sources.datasets.dataset import to_unit_float
from ..sources.models.encode import encode_means

PROBE_COLUMNS = ("probe_accuracy", "probe_cross_entropy", "probe_margin")


@torch.no_grad()
def latent_means(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """μ(x) of every row of ``x`` (stored dtype) with the model in eval mode, float64 on the host."""
    model.eval().to(device)
    parts = [
        encode_means(model, to_unit_float(x[b:e].to(device)))[0].double().cpu()
        for b, e in row_ranges(0, len(x), batch_size)
    ]
    return torch.cat(parts).numpy()


def probe_scores(mu_train: np.ndarray, p_train: np.ndarray, mu_test: np.ndarray, p_test: np.ndarray) -> dict:
    """Fit the probe on (μ, argmax p) of the training rows; score it on the test rows (module docstring).

    With one teacher class only on the training rows there is nothing to fit: the scores are NaN.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = p_train.argmax(axis=1)
    if len(np.unique(labels)) < 2:
        return dict.fromkeys(PROBE_COLUMNS, float("nan"))
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    probe.fit(mu_train, labels)
    # The probe knows only the classes it saw; the others get probability 0 (and an infinite
    # cross-entropy wherever the teacher gives them mass: honest, not floored).
    q = np.zeros_like(p_test)
    q[:, probe.classes_] = probe.predict_proba(mu_test)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross_entropy = float(np.mean(-np.where(p_test > 0, p_test * np.log(q), 0.0).sum(axis=1)))
    p_bar = p_test.mean(axis=0)
    marginal_entropy = float(-(p_bar[p_bar > 0] * np.log(p_bar[p_bar > 0])).sum())
    return {
        "probe_accuracy": float(np.mean(q.argmax(axis=1) == p_test.argmax(axis=1))),
        "probe_cross_entropy": cross_entropy,
        "probe_margin": marginal_entropy - cross_entropy,
    }
