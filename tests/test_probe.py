"""The post-hoc probe: its numbers against plain numpy, and why it is not the certificate (a probe
reads the teacher out of means that the raw witness certifies nothing about)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from auditor.training.probe import PROBE_COLUMNS, probe_scores

from . import reference as ref


def teacher_and_means(rng, n: int, K: int, d: int, code_dim: int, sharpness: float = 3.0):
    """Teacher probabilities, and means that carry the teacher's class on latent ``code_dim`` only."""
    p = ref.softmax(rng.normal(size=(n, K)) * sharpness)
    mu = rng.normal(0, 0.1, size=(n, d))
    mu[:, code_dim] += p.argmax(axis=1) * 2.0
    return mu, p


def test_scores_are_accuracy_and_cross_entropy_of_the_fitted_probe():
    rng = np.random.default_rng(0)
    mu_train, p_train = teacher_and_means(rng, 400, 3, 4, 0)
    mu_test, p_test = teacher_and_means(rng, 150, 3, 4, 0)
    scores = probe_scores(mu_train, p_train, mu_test, p_test)
    # The same probe fitted here, its scores written out in numpy.
    scaler = StandardScaler().fit(mu_train)
    probe = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(mu_train), p_train.argmax(axis=1))
    q = probe.predict_proba(scaler.transform(mu_test))
    cross_entropy = float(np.mean(-(p_test * np.log(q)).sum(axis=1)))
    p_bar = p_test.mean(axis=0)
    assert scores["probe_accuracy"] == pytest.approx(np.mean(q.argmax(1) == p_test.argmax(1)))
    assert scores["probe_cross_entropy"] == pytest.approx(cross_entropy, rel=1e-9)
    assert scores["probe_margin"] == pytest.approx(-(p_bar * np.log(p_bar)).sum() - cross_entropy, rel=1e-9)
    assert scores["probe_accuracy"] > 0.95


def test_a_probe_reads_out_what_the_raw_witness_does_not_certify():
    # K = 3, d = 4: the witness reads latent rows 0-1; the class is written on row 3 only. A sharp
    # teacher, so that the probe (fitted to its most probable class) also predicts its probabilities.
    rng = np.random.default_rng(1)
    mu_train, p_train = teacher_and_means(rng, 400, 3, 4, 3, sharpness=10.0)
    mu_test, p_test = teacher_and_means(rng, 150, 3, 4, 3, sharpness=10.0)
    raw = ref.certificate(mu_test, p_test, 3, 2.0)
    scores = probe_scores(mu_train, p_train, mu_test, p_test)
    assert raw["margin"] <= 0 < scores["probe_margin"]  # not certified, yet highly predictable post hoc


def test_means_that_carry_nothing_give_no_probe_margin():
    rng = np.random.default_rng(2)
    p_train, p_test = (ref.softmax(rng.normal(size=(n, 3)) * 3) for n in (400, 200))
    scores = probe_scores(rng.normal(size=(400, 4)), p_train, rng.normal(size=(200, 4)), p_test)
    assert scores["probe_margin"] < 0.02  # at best the marginal, less what fitting noise costs


def test_one_teacher_class_leaves_nothing_to_fit():
    p = np.tile([0.9, 0.1], (20, 1))
    scores = probe_scores(np.zeros((20, 2)), p, np.zeros((5, 2)), p[:5])
    assert set(scores) == set(PROBE_COLUMNS) and all(math.isnan(v) for v in scores.values())
