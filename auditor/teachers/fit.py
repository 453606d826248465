"""Fitting the unsupervised PCA → diagonal-GMM teacher with scikit-learn, on an N×D float matrix.

Callers pass the same [0, 1] float inputs the audit pass feeds the teacher
(:func:`auditor.sources.datasets.features.dataset_features`), so a teacher fitted here and one run
by ``audit certify`` see identical numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..certificate.json_input import is_positive_finite
from ..errors import AuditInputError
from .pca_gmm import PcaGmmTeacher


def check_teacher_shape(rank: int, num_classes: int, num_samples: int, input_dim: int) -> None:
    """The PCA rank and K that ``num_samples`` samples of ``input_dim`` values can support."""
    if (
        isinstance(rank, bool)
        or not isinstance(rank, (int, np.integer))
        or not 1 <= rank <= min(num_samples, input_dim)
    ):
        raise AuditInputError(
            f"PCA rank {rank} is not supported by the data: it must be between 1 and min(N, D) = "
            f"min({num_samples}, {input_dim}) = {min(num_samples, input_dim)}"
        )
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or not 2 <= num_classes <= num_samples
    ):
        raise AuditInputError(
            f"K={num_classes} components is more than the data supports: the teacher needs 2 <= K <= N = {num_samples}"
        )


def check_temperature(temperature: float) -> float:
    if not is_positive_finite(temperature.item() if isinstance(temperature, np.floating) else temperature):
        raise AuditInputError(f"teacher temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def fit_pca(x: np.ndarray, rank: int, seed: int = 0):
    """scikit-learn's PCA of ``x`` (N×D float64) to ``rank`` dimensions."""
    from sklearn.decomposition import PCA

    return PCA(n_components=rank, random_state=seed).fit(x)


def fit_gmm_on_scores(
    pca, y: np.ndarray, num_classes: int, temperature: float = 1.0, seed: int = 0, n_init: int = 2
) -> tuple[PcaGmmTeacher, bool]:
    """A diagonal GMM with ``num_classes`` components on PCA scores ``y``; (teacher, converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise AuditInputError(f"--n-init (GMM restarts) must be a whole number >= 1, got {n_init!r}")
    gmm = GaussianMixture(n_components=num_classes, covariance_type="diag", random_state=seed, n_init=n_init)
    with warnings.catch_warnings():
        # Non-convergence is reported by the caller (search table), not as a stray warning.
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            gmm.fit(y)
        except ValueError as exc:  # e.g. components collapsing onto single points
            raise AuditInputError(
                f"the GMM with K={num_classes} could not be fitted to {len(y)} samples "
                f"({str(exc).splitlines()[0][:120]}); use a smaller K"
            ) from None
    teacher = PcaGmmTeacher(
        pca_mean=pca.mean_,
        pca_components=pca.components_,
        log_weights=np.log(gmm.weights_),
        means=gmm.means_,
        variances=gmm.covariances_,
        temperature=temperature,
    )
    return teacher, bool(gmm.converged_)


def fit_pca_gmm(
    x: np.ndarray, rank: int, num_classes: int, temperature: float = 1.0, seed: int = 0, n_init: int = 2
) -> PcaGmmTeacher:
    """PCA to ``rank`` dimensions, then a diagonal GMM with ``num_classes`` components.

    The returned teacher's posterior at temperature 1 equals GaussianMixture.predict_proba on
    the PCA scores (same formula, evaluated in float64); at τ it is the softmax of the same
    log-joint divided by τ (docs/formats.md).
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    check_teacher_shape(rank, num_classes, *x.shape)
    temperature = check_temperature(temperature)
    pca = fit_pca(x, rank, seed)
    teacher, _ = fit_gmm_on_scores(pca, pca.transform(x), num_classes, temperature, seed, n_init)
    return teacher


def with_temperature(teacher: PcaGmmTeacher, temperature: float) -> PcaGmmTeacher:
    """The same PCA and GMM at another temperature τ (a new module; the original is unchanged)."""
    fields = {k: v for k, v in teacher.to_dict().items() if k not in ("format", "kind", "temperature")}
    return PcaGmmTeacher(temperature=check_temperature(temperature), **fields)


def _batches(x: np.ndarray, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))


@torch.no_grad()
def teacher_probabilities(teacher: torch.nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """T(·|x_i) for the rows of ``x`` (N×D [0, 1] inputs), an N×K float64 array."""
    return torch.cat([teacher(rows) for rows in _batches(x, batch_size)]).to(torch.float64).numpy()


@torch.no_grad()
def posteriors_at_temperatures(
    teacher: PcaGmmTeacher, x: np.ndarray, temperatures: Sequence[float], batch_size: int = 4096
) -> Iterator[np.ndarray]:
    """The teacher's posterior on the rows of ``x`` at each of ``temperatures`` (N×K float64 arrays, in
    order), from one evaluation of the log-joint: τ only divides it. Each equals
    ``teacher_probabilities(with_temperature(teacher, τ), x)`` to the teacher's 1e-12
    (:data:`~auditor.teachers.pca_gmm.POSTERIOR_TOLERANCE`): the log-joint is made exact wherever
    any of the temperatures needs it."""
    log_joint = torch.cat([teacher.log_joint(rows, temperatures) for rows in _batches(x, batch_size)])
    for tau in temperatures:
        yield torch.softmax(log_joint / tau, dim=1).numpy()
