import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.certificate.witness import (
    WitnessSpec,
    analytic_code,
    analytic_energy,
    centered_log,
    simplex_vertices,
    witness_matrix,
)
from auditor.errors import AuditInputError

from .reference import helmert_simplex, softmax, witness_S


@given(st.integers(2, 40))
def test_simplex_vertices_match_the_documented_helmert_formula(K):
    np.testing.assert_allclose(simplex_vertices(K), helmert_simplex(K), rtol=0, atol=1e-15)


@given(st.integers(2, 40))
def test_simplex_gram_matrix_is_regular(K):
    V = simplex_vertices(K)
    gram = V.T @ V
    np.testing.assert_allclose(gram, K / (K - 1) * (np.eye(K) - np.ones((K, K)) / K), atol=1e-12)
    np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-12)
    off = gram[~np.eye(K, dtype=bool)]
    np.testing.assert_allclose(off, -1 / (K - 1), atol=1e-12)


@given(st.integers(2, 12), st.integers(0, 5), st.integers(0, 4))
def test_witness_matrix_places_V_at_the_offset(K, offset, extra):
    d = offset + K - 1 + extra
    S = witness_matrix(WitnessSpec(K, d, 1.5, offset))
    np.testing.assert_array_equal(S, witness_S(K, d, offset))


probability_rows = st.integers(2, 10).flatmap(
    lambda K: st.lists(st.lists(st.floats(0.01, 1.0), min_size=K, max_size=K), min_size=1, max_size=20)
)


@settings(max_examples=60)
@given(probability_rows, st.floats(0.1, 20.0), st.integers(0, 3), st.integers(0, 3))
def test_analytic_code_inverts_the_witness_exactly(rows, beta, offset, extra):
    p = np.array(rows)
    p /= p.sum(axis=1, keepdims=True)
    K = p.shape[1]
    spec = WitnessSpec(K, offset + K - 1 + extra, beta, offset)
    mu = analytic_code(p, spec)
    q = softmax(beta * mu @ witness_S(K, spec.latent_dim, offset))
    np.testing.assert_allclose(q, p, rtol=1e-9, atol=1e-12)
    # energy ‖μ*‖² = ((K−1)/(Kβ²))‖ℓ‖², per sample and on average
    ell2 = (centered_log(p) ** 2).sum(axis=1)
    np.testing.assert_allclose((mu**2).sum(axis=1), (K - 1) / (K * beta**2) * ell2, rtol=1e-9, atol=1e-20)
    assert math.isclose(analytic_energy(ell2.mean(), K, beta), (mu**2).sum(axis=1).mean(), rel_tol=1e-9, abs_tol=1e-20)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1, "latent_dim": 4, "beta": 1.0}, "at least 2 classes"),
        ({"num_classes": 5, "latent_dim": 3, "beta": 1.0}, "too small"),
        ({"num_classes": 3, "latent_dim": 4, "beta": 1.0, "offset": 3}, "too small"),
        ({"num_classes": 3, "latent_dim": 4, "beta": 0.0}, "beta"),
        ({"num_classes": 3, "latent_dim": 4, "beta": float("nan")}, "beta"),
        ({"num_classes": 3, "latent_dim": 4, "beta": 1.0, "offset": -1}, "offset"),
    ],
)
def test_bad_witness_specs_are_input_errors(kwargs, message):
    with pytest.raises(AuditInputError, match=message):
        WitnessSpec(**kwargs)
