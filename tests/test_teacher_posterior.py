"""The PCA → GMM teacher's posterior against the broadcast definition of docs/formats.md, in plain numpy.

The module evaluates the quadratic expanded into two matrix products and repairs the entries
whose rounding could reach the posterior (auditor/teachers/pca_gmm.py); these tests hold it to
the definition's posterior within 1e-12 at any K, including teachers where the expansion alone
misses by far more.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.teachers.fit import posteriors_at_temperatures, teacher_probabilities, with_temperature
from auditor.teachers.pca_gmm import PcaGmmTeacher

from . import reference as ref

TOLERANCE = 1e-12


def as_dict(teacher: PcaGmmTeacher) -> dict:
    """The teacher's arrays (numpy float64) and temperature, as reference.pca_gmm_probs takes them."""
    fields = teacher.to_dict()
    return {
        k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in fields.items() if k not in ("format", "kind")
    }


def plain_expansion(x: np.ndarray, t: dict) -> np.ndarray:
    """The two-product form without any repair, in numpy: what the definition is held against."""
    y = (x - t["pca_mean"]) @ t["pca_components"].T
    a, b = 1 / t["variances"], t["means"] / t["variances"]
    quadratic = (y * y) @ a.T - 2 * y @ b.T + (t["means"] * b).sum(1)
    log_joint = t["log_weights"] - 0.5 * (quadratic + np.log(2 * np.pi * t["variances"]).sum(1))
    return ref.softmax(log_joint / t["temperature"])


def posterior(teacher: PcaGmmTeacher, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return teacher(torch.from_numpy(x)).numpy()


def tight_clusters(seed: int, K: int, r: int, n: int, spread: float, far: float):
    """A teacher whose components sit in tight groups far from the PCA origin, and rows near them.

    The projection is the identity (y = x exactly, whatever the BLAS), so every difference is the
    log-joint's own. Components of a group overlap, so posteriors are not one-hot; their
    variances (down to 1e-6 when ``spread`` is 1e-3) make y²/v huge while (y − m)²/v is O(1):
    the expansion's cancellation.
    """
    rng = np.random.default_rng(seed)
    sites = rng.uniform(-far, far, size=(max(1, K // 8), r))
    scale = spread * 10 ** rng.uniform(-0.5, 0.5, size=(K, 1))
    means = sites[rng.integers(0, len(sites), K)] + scale * rng.normal(size=(K, r))
    variances = scale**2 * 10 ** rng.uniform(-0.3, 0.3, size=(K, r))
    log_weights = np.log(rng.dirichlet(np.ones(K)))
    teacher = PcaGmmTeacher(np.zeros(r), np.eye(r), log_weights, means, variances, 1.0)
    near = rng.integers(0, K, n)
    x = means[near] + np.sqrt(variances[near]) * rng.normal(scale=1.5, size=(n, r))
    return teacher, x


def well_conditioned_rows(x: np.ndarray, t: dict) -> np.ndarray:
    """Rows whose float64 definition agrees with the same formula in extended precision to 1e-13:
    where the definition itself fixes the posterior to 1e-12, so there is something to match."""
    extended = ref.pca_gmm_probs(x.astype(np.longdouble), {k: np.asarray(v, np.longdouble) for k, v in t.items()})
    return np.abs(ref.pca_gmm_probs(x, t) - extended).max(axis=1) <= 1e-13


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    K=st.sampled_from([2, 3, 10, 37, 100, 200]),
    r=st.integers(1, 6),
    spread=st.sampled_from([1e-3, 1e-2, 1.0]),
    far=st.sampled_from([0.0, 10.0, 300.0]),
    tau=st.floats(0.1, 16.0),
)
def test_posterior_is_the_definitions_to_1e_12(seed, K, r, spread, far, tau):
    teacher, x = tight_clusters(seed, K, r, 64, spread, far)
    teacher = with_temperature(teacher, tau)
    t = as_dict(teacher)
    expected = ref.pca_gmm_probs(x, t)
    rows = well_conditioned_rows(x, t)
    assert rows.mean() >= 0.9  # the definition is well conditioned on these rows: the test has its subject
    got = posterior(teacher, x)
    assert np.abs(got - expected)[rows].max() <= TOLERANCE
    assert np.allclose(got.sum(axis=1), 1.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("compiled", [False, True], ids=["torch-gathers", "compiled-loop"])
@pytest.mark.parametrize("K", [10, 100, 200])
def test_repair_makes_exact_what_the_plain_expansion_misses(K, compiled):
    """Both forms of the repair, at every K (by default the loop from COMPILED_FROM_CLASSES)."""
    teacher, x = tight_clusters(7, K, 6, 400, 1e-3, 300.0)
    for tau in (1.0, 8.0):
        at_tau = with_temperature(teacher, tau)
        at_tau.compiled_repair = compiled
        t = as_dict(at_tau)
        expected = ref.pca_gmm_probs(x, t)
        assert np.abs(plain_expansion(x, t) - expected).max() > 1e-9  # the cancellation is real here
        assert np.abs(posterior(at_tau, x) - expected).max() <= TOLERANCE


@pytest.fixture(scope="module")
def digits_scores():
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    x = load_digits().data / 16.0
    return x, PCA(20, random_state=0).fit(x)


@pytest.mark.parametrize("K", [10, 100, 200])
def test_fitted_teacher_on_digits_matches_the_definition(digits_scores, K):
    """A real PCA(20) (its projection computed by numpy's BLAS in the reference) and a fitted GMM."""
    from sklearn.mixture import GaussianMixture

    x, pca = digits_scores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence within 10 iterations does not matter here
        gmm = GaussianMixture(K, covariance_type="diag", random_state=0, max_iter=10).fit(pca.transform(x))
    teacher = PcaGmmTeacher(pca.mean_, pca.components_, np.log(gmm.weights_), gmm.means_, gmm.covariances_, 1.0)
    for tau in (1.0, 8.0):
        at_tau = with_temperature(teacher, tau)
        expected = ref.pca_gmm_probs(x, as_dict(at_tau))
        assert np.abs(teacher_probabilities(at_tau, x, batch_size=500) - expected).max() <= TOLERANCE


def test_one_log_joint_serves_every_temperature():
    teacher, x = tight_clusters(3, 40, 4, 300, 1e-2, 300.0)
    temperatures = [0.5, 1.0, 4.0, 16.0]
    together = list(posteriors_at_temperatures(teacher, x, temperatures, batch_size=128))
    assert len(together) == len(temperatures)
    for tau, p in zip(temperatures, together):
        expected = ref.pca_gmm_probs(x, as_dict(with_temperature(teacher, tau)))
        assert np.abs(p - expected).max() <= TOLERANCE


def test_expansion_stays_float64_under_autocast():
    """--precision bf16 runs the projection at bf16 (as before); the quadratic must stay float64."""
    teacher, x = tight_clusters(5, 30, 4, 200, 1e-2, 10.0)
    inputs = torch.from_numpy(x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        projected = teacher.project(inputs).double().numpy()
        got = teacher(inputs).numpy()
    t = as_dict(teacher)
    # the definition on the same projected values: the identity projection with y as the input
    expected = ref.pca_gmm_probs(projected, {**t, "pca_components": np.eye(4), "pca_mean": np.zeros(4)})
    assert np.abs(got - expected).max() <= TOLERANCE


def test_derived_constants_are_not_part_of_the_file_or_the_state_dict():
    teacher, _ = tight_clusters(0, 5, 3, 1, 1.0, 0.0)
    assert set(teacher.state_dict()) == {"pca_mean", "pca_components", "log_weights", "means", "variances"}
    assert set(teacher.to_dict()) == {
        "format",
        "kind",
        "pca_mean",
        "pca_components",
        "log_weights",
        "means",
        "variances",
        "temperature",
    }
    assert math.isclose(teacher.kappa, (2 * 3 + 8) * 2.0**-53)


def test_inputs_that_require_grad_give_the_same_posterior_and_a_gradient():
    """The bound reads detached views; where entries need the definition, the batch is the
    definition's, graph and all."""
    teacher, x = tight_clusters(seed=3, K=40, r=4, n=64, spread=1e-3, far=30.0)
    plain = posterior(teacher, x)
    inputs = torch.from_numpy(x).requires_grad_(True)
    probabilities = teacher(inputs)
    assert np.abs(probabilities.detach().numpy() - plain).max() <= TOLERANCE
    probabilities[:, 0].sum().backward()
    assert inputs.grad is not None and torch.isfinite(inputs.grad).all() and inputs.grad.abs().sum() > 0
