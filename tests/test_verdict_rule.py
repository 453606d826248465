"""The strict verdict, not decided by rounding: certified iff LCB > δ + the margin's rounding bound,
and never for an exactly constant encoder (docs/mathematics.md, "The confidence bound and the
verdict" and "Rounding")."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.certificate.check import check_certificate
from auditor.certificate.document import NOT_COLLAPSED_NOTE
from auditor.certificate.verdict import certifies, decide
from auditor.errors import AuditInputError

from . import reference as ref
from .cli_run import run
from .report_fixtures import certify, write_certificate, write_inputs
from .test_certificate import run_state

ROOT = Path(__file__).resolve().parent.parent
CONFIDENCES = (0.0, 0.5, 0.95, 0.999)


def code_of(p_bar: np.ndarray, d: int, beta: float) -> np.ndarray:
    """The analytic code μ*(p̄) = ((K−1)/(Kβ))·S·ℓ(p̄), from the formula: softmax(β·Sᵀμ*) = p̄."""
    K = len(p_bar)
    ell = np.log(p_bar) - np.log(p_bar).mean()
    return ((K - 1) / (K * beta)) * ref.witness_S(K, d) @ ell


def teacher_rows(rng: np.random.Generator, n: int, K: int, peak: float) -> np.ndarray:
    return ref.softmax(rng.normal(size=(n, K)) * peak)


# ------------------------------------------------------------------ (a) no teacher information, constant μ
@settings(max_examples=25, deadline=None)
@given(
    K=st.integers(2, 30),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
    at_the_code=st.booleans(),
    chunks=st.integers(1, 4),
)
def test_a_constant_encoder_without_teacher_information_is_never_certified(K, n, seed, at_the_code, chunks):
    rng = np.random.default_rng(seed)
    row = teacher_rows(rng, 1, K, 3.0)[0]
    p = np.tile(row, (n, 1))  # I_T = 0
    beta = float(rng.uniform(0.5, 4))
    point = code_of(row, K - 1, beta) if at_the_code else rng.normal(size=K - 1)
    numbers = run_state(np.tile(point, (n, 1)), p, K, beta, chunks=chunks).compute()
    assert numbers.diagnostics["exactly_constant"]
    for confidence in CONFIDENCES:
        for delta in (0.0, -1.0):  # not even a negative δ certifies a constant encoder
            assert not decide(numbers, confidence, delta).certified


# ------------------------------------------------------------------ (b) constant μ at the code of p̄
@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(2, 200),
    n=st.integers(2, 300),
    peak=st.sampled_from([0.1, 1.0, 4.0, 8.0]),
    seed=st.integers(0, 2**32 - 1),
    chunks=st.integers(1, 5),
)
def test_a_constant_encoder_that_predicts_p_bar_is_never_certified(K, n, peak, seed, chunks):
    """q = p̄ for every sample, so Ĝ = 0 in exact arithmetic; computed, it is ±rounding."""
    rng = np.random.default_rng(seed)
    p = teacher_rows(rng, n, K, peak)
    beta = float(rng.uniform(0.5, 4))
    mu = np.tile(code_of(p.mean(axis=0), K - 1, beta), (n, 1))
    numbers = run_state(mu, p, K, beta, chunks=chunks).compute()
    assert abs(numbers.margin) <= numbers.margin_rounding_bound
    for confidence in (0.0, 0.95):
        assert not decide(numbers, confidence).certified
        # Not only by the exact-constancy rule: the rounding bound alone refuses it too.
        lcb = numbers.margin_lcb(confidence)
        assert not certifies(lcb, 0.0, numbers.margin_rounding_bound, exactly_constant=False)


def test_rows_summing_to_less_than_one_do_not_certify_a_constant_encoder():
    """Rows summing to s = 1 − 9e-5 pass the row check (tolerance 1e-4); for constant q Gibbs then
    allows Ĝ up to 1 − s, and the code of p̄/s reaches it, with a standard error of 0."""
    rng = np.random.default_rng(0)
    K, n, beta = 10, 5000, 2.0
    s = 1 - 9e-5
    p = teacher_rows(rng, n, K, 2.0) * s
    mu = np.tile(code_of(p.mean(axis=0) / s, K - 1, beta), (n, 1))
    numbers = run_state(mu, p, K, beta, chunks=10).compute()
    assert numbers.margin > 8e-5  # a margin that a constant encoder would have been certified on
    assert numbers.margin <= numbers.margin_rounding_bound
    for confidence in CONFIDENCES:
        assert not decide(numbers, confidence).certified
        assert not certifies(numbers.margin_lcb(confidence), 0.0, numbers.margin_rounding_bound, False)


# ------------------------------------------------------------------ the bound against exact arithmetic
@settings(max_examples=20, deadline=None)
@given(
    K=st.integers(2, 12),
    n=st.integers(1, 30),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
    peak=st.sampled_from([0.5, 3.0, 10.0]),
    seed=st.integers(0, 2**32 - 1),
    chunks=st.integers(1, 4),
)
def test_the_rounding_bound_covers_the_computed_margin(K, n, scale, peak, seed, chunks):
    """|Ĝ computed − Ĝ exact| ≤ the bound, with Ĝ exact in 50-digit decimal arithmetic from the formulas."""
    rng = np.random.default_rng(seed)
    d = K - 1 + int(rng.integers(0, 3))
    mu, p = rng.normal(size=(n, d)) * scale, teacher_rows(rng, n, K, peak)
    beta = float(rng.uniform(0.2, 5))
    numbers = run_state(mu, p, K, beta, chunks=chunks).compute()
    exact = ref.exact_margin(mu, p, K, beta)
    assert abs(numbers.margin - exact) <= numbers.margin_rounding_bound


# ------------------------------------------------------------------ (c) a tie proves nothing
@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_a_tie_is_not_certified(value):
    assert not certifies(value, value, 0.0, exactly_constant=False)
    assert certifies(value + max(1.0, abs(value)), value, 0.0, exactly_constant=False)


def test_a_tie_at_the_exact_margin_exits_1(tmp_path, capsys):
    code, cert = certify(tmp_path, formats="json", extra=["--confidence", "0"])
    assert code == 0 and cert["margin"] > 0.3
    args = [*write_inputs(tmp_path), "--confidence", "0", "--min-margin", repr(cert["margin"])]
    code, _, _ = run(["certify", *args, "--out", tmp_path / "tie", "--quiet"], capsys)
    assert code == 1


def test_the_checker_applies_the_strict_rule_to_older_certificates(tmp_path):
    """A certificate written before margin_rounding_bound existed is judged by LCB > δ alone: a tie
    that the old rule (LCB ≥ δ) certified is now a contradiction."""
    _, cert = certify(tmp_path, formats="json")
    old = copy.deepcopy(cert)
    del old["margin_rounding_bound"]
    old["min_margin"] = old["margin_lcb"]
    with pytest.raises(AuditInputError, match="contradicts margin_lcb"):
        check_certificate(old)
    old["verdict"] = "not_certified"
    old["meaning"] = NOT_COLLAPSED_NOTE
    check_certificate(old)


def test_an_older_certificate_still_recomputes(tmp_path, capsys):
    """verify --recompute compares every number the older certificate has; the new key is not one."""
    _, cert = certify(tmp_path, formats="json")
    del cert["margin_rounding_bound"]
    path = write_certificate(tmp_path / "report" / "certificate.json", cert)
    assert run(["verify", path, "--recompute"], capsys)[0] == 0


def test_the_checker_refuses_a_bound_below_its_floor_or_a_certified_constant_encoder(tmp_path):
    _, cert = certify(tmp_path, formats="json")
    edited = dict(cert, margin_rounding_bound=0.0)
    with pytest.raises(AuditInputError, match="margin_rounding_bound"):
        check_certificate(edited)
    constant = copy.deepcopy(cert)
    constant["diagnostics"]["exactly_constant"] = True
    with pytest.raises(AuditInputError, match="exactly_constant True"):
        check_certificate(constant)


# ------------------------------------------------------------------ (d) real certified models stay certified
REFERENCE = sorted((ROOT / "reports" / "digits" / "certificates").glob("*/certificate.json"))
CERTIFIED_BEFORE = {  # the verdicts under the old rule (LCB ≥ δ), before the bound existed
    "aligned-kl1-s0",
    "aligned-kl2-s0",
    "aligned-kl4-s0",
    "aligned-kl8-s0",
    "const-var-aligned-s0",
    "lidvae-aligned-s0",
    "prefit-s0",
    "rescue-s0",
}


def test_reference_certificates_keep_their_verdicts_far_above_the_bound():
    verdicts = {}
    for path in REFERENCE:
        cert = json.loads(path.read_text())
        bound = cert["margin_rounding_bound"]
        assert 0 < bound < 1e-11
        verdicts[path.parent.name] = cert["verdict"]
        if cert["verdict"] == "certified":
            assert cert["margin_lcb"] - cert["min_margin"] > 1e9 * bound
    assert {stem for stem, verdict in verdicts.items() if verdict == "certified"} == CERTIFIED_BEFORE


def test_a_certified_reference_model_is_certified_again(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    model = "models/digits/aligned-kl8-s0.safetensors"  # the smallest certified margin of the table
    args = ["--model", model, "--teacher", "models/digits/teacher.pt", "--data", "digits", "--split", "test"]
    code, _, err = run(["certify", *args, "--out", tmp_path, "--quiet", "--no-model-diagnostics"], capsys)
    assert code == 0, err
    cert = json.loads((tmp_path / "certificate.json").read_text())
    assert math.isclose(cert["margin"], 0.5275, abs_tol=1e-4)
