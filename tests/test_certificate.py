"""The certificate's numbers against plain numpy on docs/mathematics.md, and the identities of §1 as properties."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from auditor.certificate.state import CertificateState
from auditor.certificate.verdict import decide
from auditor.certificate.witness import WitnessSpec, analytic_code
from auditor.errors import AuditInputError

from . import reference as ref


@st.composite
def audit_sets(draw, min_n=2, max_n=40):
    K = draw(st.integers(2, 6))
    d = K - 1 + draw(st.integers(0, 3))
    N = draw(st.integers(min_n, max_n))
    mu = draw(arrays(np.float64, (N, d), elements=st.floats(-3, 3)))
    logits = draw(arrays(np.float64, (N, K), elements=st.floats(-6, 6)))
    p = ref.softmax(logits)
    beta = draw(st.floats(0.2, 8.0))
    return mu, p, K, beta


def has_near_ties(probs: np.ndarray) -> bool:
    """Whether some row's two largest entries are within rounding: its argmax is then rounding."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return bool((top2[:, 1] - top2[:, 0] <= 1e-9).any())


def run_state(mu, p, K, beta, logvar=None, p_view=None, chunks=1, offset=0):
    spec = WitnessSpec(K, mu.shape[1], beta, offset)
    state = CertificateState(spec, with_view=p_view is not None)
    for idx in np.array_split(np.arange(len(mu)), chunks):
        if len(idx) == 0:
            continue
        state.update(
            torch.as_tensor(mu[idx]),
            torch.as_tensor(p[idx]),
            None if logvar is None else torch.as_tensor(logvar[idx]),
            None if p_view is None else torch.as_tensor(p_view[idx]),
        )
    return state


@settings(max_examples=80, deadline=None)
@given(audit_sets(), st.integers(1, 4))
def test_numbers_match_the_documented_formulas(audit, chunks):
    mu, p, K, beta = audit
    numbers = run_state(mu, p, K, beta, chunks=chunks).compute()
    expected = ref.certificate(mu, p, K, beta)
    assert numbers.teacher_information == pytest.approx(expected["teacher_information"], rel=1e-10, abs=1e-12)
    assert numbers.alignment_loss == pytest.approx(expected["alignment_loss"], rel=1e-10, abs=1e-12)
    assert numbers.margin == pytest.approx(expected["margin"], rel=1e-10, abs=1e-12)
    assert numbers.margin == pytest.approx(numbers.teacher_information - numbers.alignment_loss, rel=1e-10, abs=1e-12)
    assert numbers.margin_lcb(0.95) == pytest.approx(expected["margin_lcb"], rel=1e-8, abs=1e-9)
    assert numbers.margin_lcb(0.0) == numbers.margin


@settings(max_examples=60, deadline=None)
@given(audit_sets(), st.data())
def test_constant_predictor_costs_exactly_teacher_information_plus_kl(audit, data):
    """(1/N) Σ KL(p_i‖c) = I_T + KL(p̄‖c) ≥ I_T for every constant c, so a constant μ has G ≤ 0."""
    _, p, K, beta = audit
    c = ref.softmax(data.draw(arrays(np.float64, (1, K), elements=st.floats(-4, 4))))[0]
    p_bar = p.mean(axis=0)
    kl_to_c = (np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(c)), 0)).sum(axis=1).mean()
    I_T = ref.entropy_rows(p_bar[None])[0] - ref.entropy_rows(p).mean()
    kl_bar = (np.where(p_bar > 0, p_bar * (np.log(np.where(p_bar > 0, p_bar, 1)) - np.log(c)), 0)).sum()
    assert kl_to_c == pytest.approx(I_T + kl_bar, rel=1e-9, abs=1e-12)

    # Through the package: every sample at the constant code μ*(c) has L = I_T + KL(p̄‖c), G = −KL(p̄‖c).
    spec = WitnessSpec(K, K - 1, beta)
    mu_c = np.repeat(analytic_code(c[None], spec), len(p), axis=0)
    numbers = run_state(mu_c, p, K, beta).compute()
    assert numbers.alignment_loss == pytest.approx(I_T + kl_bar, rel=1e-8, abs=1e-10)
    assert numbers.margin <= 1e-9
    assert numbers.diagnostics["exactly_constant"]


@settings(max_examples=40, deadline=None)
@given(audit_sets())
def test_constant_at_the_mean_teacher_has_zero_margin(audit):
    _, p, K, beta = audit
    p_bar = p.mean(axis=0, keepdims=True)
    spec = WitnessSpec(K, K - 1, beta)
    mu = np.repeat(analytic_code(p_bar, spec), len(p), axis=0)
    numbers = run_state(mu, p, K, beta).compute()
    assert numbers.margin == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(audit_sets(), st.floats(0.0, 1.0))
def test_margin_energy_path_runs_from_uniform_to_teacher_information(audit, t):
    _, p, K, beta = audit
    spec = WitnessSpec(K, K - 1, beta)
    mu_star = analytic_code(p, spec)
    H_bar = ref.entropy_rows(p.mean(0)[None])[0]
    start = run_state(0 * mu_star, p, K, beta).compute()
    end = run_state(mu_star, p, K, beta).compute()
    assert start.margin == pytest.approx(H_bar - math.log(K), abs=1e-10)
    assert start.margin <= 1e-12
    assert end.margin == pytest.approx(end.teacher_information, abs=1e-8)
    assert end.alignment_loss == pytest.approx(0.0, abs=1e-8)
    middle = run_state(t * mu_star, p, K, beta).compute()
    E_T = ((np.log(p) - np.log(p).mean(1, keepdims=True)) ** 2).sum(1).mean()
    assert middle.diagnostics["mean_sq_norm"] == pytest.approx(
        t**2 * (K - 1) / (K * beta**2) * E_T, rel=1e-9, abs=1e-12
    )


@settings(max_examples=60, deadline=None)
@given(audit_sets(), st.data())
def test_view_gap_bounds_the_margin_change(audit, data):
    mu, p, K, beta = audit
    p_view = ref.softmax(data.draw(arrays(np.float64, p.shape, elements=st.floats(-6, 6))))
    numbers = run_state(mu, p, K, beta, p_view=p_view).compute()
    expected = ref.view_gap(mu, p, p_view, K, beta)
    view = numbers.view
    assert abs(view["margin_encoder_view"] - numbers.margin) <= view["bound"] + 1e-10
    for key in ("bound", "margin_encoder_view", "mean_kl", "mean_tv"):
        assert view[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(audit_sets(min_n=2, max_n=30), st.data())
def test_merge_of_two_states_equals_one_pass_over_the_union(audit, data):
    mu, p, K, beta = audit
    cut = data.draw(st.integers(1, len(mu) - 1)) if len(mu) > 1 else 1
    logvar = np.linspace(-1, 1, mu.size).reshape(mu.shape)
    whole = run_state(mu, p, K, beta, logvar=logvar).compute()
    a = run_state(mu[:cut], p[:cut], K, beta, logvar=logvar[:cut])
    b = run_state(mu[cut:], p[cut:], K, beta, logvar=logvar[cut:])
    b.merge_state(a)  # order must not matter either
    merged = b.compute()
    for key in ("margin", "teacher_information", "alignment_loss", "margin_std_error"):
        assert getattr(merged, key) == pytest.approx(getattr(whole, key), rel=1e-12, abs=1e-13)
    for key in ("max_abs_deviation_from_mean", "active_units", "mean_sq_norm", "mean_prior_kl"):
        assert merged.diagnostics[key] == pytest.approx(whole.diagnostics[key], rel=1e-12, abs=1e-13)
    if not has_near_ties(ref.certificate(mu, p, K, beta)["q"]):
        assert merged.diagnostics["witness_agreement"] == whole.diagnostics["witness_agreement"]
    assert [c["count"] for c in merged.per_class] == [c["count"] for c in whole.per_class]


@settings(max_examples=40, deadline=None)
@given(audit_sets())
def test_diagnostics_match_the_definitions(audit):
    mu, p, K, beta = audit
    logvar = np.cos(np.arange(mu.size)).reshape(mu.shape)
    numbers = run_state(mu, p, K, beta, logvar=logvar, chunks=3).compute()
    expected = ref.diagnostics(mu, logvar)
    d = numbers.diagnostics
    assert d["max_abs_deviation_from_mean"] == pytest.approx(
        expected["max_abs_deviation_from_mean"], rel=1e-9, abs=1e-12
    )
    assert d["active_units"] == expected["active_units"] or np.any(np.isclose(mu.var(0), 0.01, rtol=1e-9))
    assert d["mean_sq_norm"] == pytest.approx(expected["mean_sq_norm"], rel=1e-10)
    assert d["mean_prior_kl"] == pytest.approx(expected["mean_prior_kl"], rel=1e-10)
    q = ref.certificate(mu, p, K, beta)["q"]
    if not has_near_ties(q) and not has_near_ties(p):
        assert d["witness_agreement"] == pytest.approx(np.mean(q.argmax(1) == p.argmax(1)))
    counts = np.bincount(p.argmax(1), minlength=K)
    assert [c["count"] for c in numbers.per_class] == counts.tolist()


def test_exact_constancy_is_detected_and_other_inputs_are_not_constant():
    p = ref.softmax(np.random.default_rng(0).normal(size=(50, 3)))
    mu = np.tile([0.3, -0.2], (50, 1))
    d = run_state(mu, p, 3, 1.0).compute().diagnostics
    assert d["exactly_constant"] and d["max_abs_deviation_from_mean"] == 0.0 and d["active_units"] == 0
    mu[7, 1] += 1e-6
    d = run_state(mu, p, 3, 1.0).compute().diagnostics
    assert not d["exactly_constant"] and d["max_abs_deviation_from_mean"] > 0


def test_verdict_follows_the_lower_bound_and_the_safety_margin():
    rng = np.random.default_rng(1)
    p = ref.softmax(3 * rng.normal(size=(400, 4)))
    spec = WitnessSpec(4, 3, 2.0)
    numbers = run_state(analytic_code(p, spec), p, 4, 2.0).compute()
    assert numbers.margin > 0.3
    assert decide(numbers, 0.95, 0.0).certified
    lcb = numbers.margin_lcb(0.95)
    assert not decide(numbers, 0.95, lcb + 1e-6).certified
    # confidence 0: the exact margin, strictly above δ plus the rounding bound; a tie Ĝ = δ fails
    assert not decide(numbers, 0.0, numbers.margin).certified
    assert decide(numbers, 0.0, numbers.margin - 2 * numbers.margin_rounding_bound).certified
    constant = run_state(np.zeros((400, 3)), p, 4, 2.0).compute()
    assert not decide(constant, 0.0, 0.0).certified


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda mu, p: (np.where(np.arange(mu.size).reshape(mu.shape) == 3, np.nan, mu), p),
            "latent means contain NaN",
        ),
        (lambda mu, p: (mu, p * 1.1), "not probability vectors"),
        (lambda mu, p: (mu, np.where(np.arange(p.size).reshape(p.shape) == 0, -0.1, p)), "not probability vectors"),
        (lambda mu, p: (mu, np.where(np.arange(p.size).reshape(p.shape) == 5, np.inf, p)), "not probability vectors"),
    ],
)
def test_bad_latents_or_probabilities_are_reported_at_compute(mutate, message):
    rng = np.random.default_rng(2)
    mu, p = mutate(rng.normal(size=(10, 3)), ref.softmax(rng.normal(size=(10, 3))))
    state = run_state(mu, p, 3, 1.0)
    with pytest.raises(AuditInputError, match=message):
        state.compute()


def test_empty_state_is_an_input_error():
    with pytest.raises(AuditInputError, match="empty"):
        CertificateState(WitnessSpec(3, 2, 1.0)).compute()


def test_wrong_shapes_are_input_errors():
    state = CertificateState(WitnessSpec(3, 4, 1.0))
    with pytest.raises(AuditInputError, match="latent means have shape"):
        state.update(torch.zeros(5, 3), torch.full((5, 3), 1 / 3))
    with pytest.raises(AuditInputError, match="teacher probabilities have shape"):
        state.update(torch.zeros(5, 4), torch.full((5, 4), 1 / 4))


@settings(max_examples=50, deadline=None)
@given(audit_sets())
def test_margin_never_exceeds_teacher_information(audit):
    """G = I_T − L with L = mean KL ≥ 0: the Barber–Agakov bound G ≤ I(index; T) = I_T."""
    mu, p, K, beta = audit
    numbers = run_state(mu, p, K, beta).compute()
    assert numbers.alignment_loss >= -1e-12
    assert numbers.margin <= numbers.teacher_information + 1e-12


@settings(max_examples=50, deadline=None)
@given(audit_sets())
def test_escape_direction_is_the_gradient_of_the_alignment_loss(audit):
    """∂KL(p_i‖q_i)/∂μ_i = β S (q_i − p_i); the reported escape force is the mean of its norm."""
    mu, p, K, beta = audit
    S = torch.as_tensor(ref.witness_S(K, mu.shape[1]))
    mu_t = torch.tensor(mu, requires_grad=True)
    logq = torch.log_softmax(beta * mu_t @ S, dim=1)
    p_t = torch.as_tensor(p)
    kl = (torch.special.xlogy(p_t, p_t) - p_t * logq).sum()
    (grad,) = torch.autograd.grad(kl, mu_t)
    q = ref.softmax(beta * mu @ ref.witness_S(K, mu.shape[1]))
    expected = beta * (q - p) @ ref.witness_S(K, mu.shape[1]).T
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-9, atol=1e-12)
    numbers = run_state(mu, p, K, beta).compute()
    assert numbers.diagnostics["escape_force"] == pytest.approx(
        np.linalg.norm(expected, axis=1).mean(), rel=1e-9, abs=1e-12
    )
