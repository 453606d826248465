"""Fitting the unsupervised PCA → diagonal-GMM teacher with scikit-learn."""

from __future__ import annotations

import numpy as np
import torch

from .errors import AuditInputError
from .teacher import PcaGmmTeacher


def fit_pca_gmm(x: np.ndarray, rank: int, num_classes: int, temperature: float = 1.0, seed: int = 0) -> PcaGmmTeacher:
    """PCA to ``rank`` dimensions, then a diagonal GMM with ``num_classes`` components.

    The returned teacher's posterior at temperature 1 equals GaussianMixture.predict_proba on
    the PCA scores (same formula, evaluated in float64).
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n, D = x.shape
    if not 1 <= rank <= min(n, D):
        raise AuditInputError(f"PCA rank must be between 1 and min(N, D) = {min(n, D)}, got {rank}")
    if not 2 <= num_classes <= n:
        raise AuditInputError(f"the teacher needs 2 <= K <= N = {n} components, got K={num_classes}")
    if not temperature > 0:
        raise AuditInputError(f"teacher temperature must be > 0, got {temperature}")
    pca = PCA(n_components=rank, random_state=seed).fit(x)
    y = pca.transform(x)
    gmm = GaussianMixture(n_components=num_classes, covariance_type="diag", random_state=seed, n_init=2).fit(y)
    return PcaGmmTeacher(
        pca_mean=pca.mean_,
        pca_components=pca.components_,
        log_weights=np.log(gmm.weights_),
        means=gmm.means_,
        variances=gmm.covariances_,
        temperature=temperature,
    )


def save_teacher(teacher: PcaGmmTeacher, path) -> None:
    import io

    from .fileio import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(teacher.to_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())
