"""Model diagnostics against independent numpy/scipy computations on tiny models with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from scipy.special import logsumexp
from scipy.stats import norm
from torch import nn

from auditor.audit.diagnostics import (
    decoder_jacobian,
    evenly_spaced_rows,
    identifiability_probe,
    ima_contrast,
    mutual_information,
    self_consistency_data,
    self_consistency_latent,
)
from auditor.cli.app import main
from auditor.nets.likelihood import decoder_mean
from auditor.nets.registry import build_model
from auditor.sources.checkpoint import save_checkpoint

from .certify_fixtures import D, K, data_x, write_teacher


class LinearVAE(nn.Module):
    """μ(x) = Ax + a, log σ² = c, decoder output Wz + b: every quantity has a numpy closed form."""

    def __init__(self, A, a, W, b, logvar=-1.0, likelihood="gaussian"):
        super().__init__()
        self.A, self.a, self.W, self.b = (torch.tensor(np.asarray(v), dtype=torch.float64) for v in (A, a, W, b))
        self.c = float(logvar)
        self.likelihood = likelihood

    def encode(self, x):
        mu = x.to(torch.float64) @ self.A.T + self.a
        return mu, torch.full_like(mu, self.c)

    def decode(self, z):
        return z.to(torch.float64) @ self.W.T + self.b


def linear_model(seed=0, d=3, D_=6, likelihood="gaussian"):
    rng = np.random.default_rng(seed)
    return LinearVAE(
        rng.normal(size=(d, D_)),
        rng.normal(size=d),
        rng.normal(size=(D_, d)),
        rng.normal(size=D_),
        likelihood=likelihood,
    ), rng


# --------------------------------------------------------------------------- mutual information
def numpy_mi(mu, logvar, eps, batch):
    total = 0.0
    for s in range(0, len(mu), batch):
        m, lv, e = mu[s : s + batch], logvar[s : s + batch], eps[s : s + batch]
        sd = np.exp(0.5 * lv)
        z = m + e * sd
        log_q_own = norm.logpdf(z, m, sd).sum(axis=1)  # only used through its expectation below
        neg_entropy = np.mean([(-0.5 * np.log(2 * np.pi * np.e) - 0.5 * lv_i).sum() for lv_i in lv])
        log_mix = np.array([logsumexp(norm.logpdf(z_i[None], m, sd).sum(axis=1)) - np.log(len(m)) for z_i in z])
        assert log_q_own.shape == log_mix.shape
        total += (neg_entropy - log_mix.mean()) * len(m)
    return total / len(mu)


@pytest.mark.parametrize("batch", [None, 7])
def test_mutual_information_matches_scipy_on_he_et_al_formula(batch):
    rng = np.random.default_rng(0)
    mu, logvar, eps = rng.normal(size=(30, 4)), rng.normal(scale=0.5, size=(30, 4)), rng.normal(size=(30, 4))
    got = mutual_information(torch.tensor(mu), torch.tensor(logvar), torch.tensor(eps), batch)
    assert got == pytest.approx(numpy_mi(mu, logvar, eps, batch or 30), rel=1e-10)


def test_mutual_information_is_near_zero_when_posteriors_ignore_x_and_log_n_when_they_separate():
    rng = np.random.default_rng(1)
    n = 2000
    same = mutual_information(torch.zeros(n, 4), torch.full((n, 4), -0.3), torch.tensor(rng.normal(size=(n, 4))))
    assert abs(same) < 0.15
    eps = rng.normal(size=(50, 2))
    apart = mutual_information(
        torch.arange(50.0)[:, None].repeat(1, 2) * 100, torch.full((50, 2), -2.0), torch.tensor(eps)
    )
    # Separated posteriors: log q̂(z_i) = log q(z_i|x_i) − log n, so the estimate is log n plus the
    # single-draw noise of log q(z_i|x_i) around −H, which is ½‖ε_i‖² − d/2.
    assert apart == pytest.approx(math.log(50) + np.mean(0.5 * (eps**2).sum(axis=1) - 1.0), abs=1e-9)


# --------------------------------------------------------------------------- self-consistency, probe
def test_self_consistency_and_identifiability_match_numpy_on_a_linear_gaussian_model():
    model, rng = linear_model()
    A, a, W, b = (t.numpy() for t in (model.A, model.a, model.W, model.b))
    x, z = rng.uniform(size=(20, 6)), rng.normal(size=(20, 3))
    mu = x @ A.T + a
    assert self_consistency_latent(model, torch.tensor(z), (6,)) == pytest.approx(
        np.mean(np.sum(((z @ W.T + b) @ A.T + a - z) ** 2, axis=1)), rel=1e-10
    )
    assert self_consistency_data(model, torch.tensor(x), torch.tensor(mu)) == pytest.approx(
        np.mean(np.sum((x - (mu @ W.T + b)) ** 2, axis=1)), rel=1e-10
    )
    probe = identifiability_probe(model, torch.tensor(x), torch.tensor(mu), torch.tensor(z))
    at_mean = norm.logpdf(x, mu @ W.T + b, 1.0).sum(axis=1).mean()
    at_prior = norm.logpdf(x, z @ W.T + b, 1.0).sum(axis=1).mean()
    assert probe["log_lik_at_mean"] == pytest.approx(at_mean, rel=1e-10)
    assert probe["gap"] == pytest.approx(at_mean - at_prior, rel=1e-10)


def test_identifiability_gap_is_zero_when_the_decoder_ignores_z():
    model, rng = linear_model(likelihood="bernoulli")
    model.W.zero_()
    x = torch.tensor((rng.uniform(size=(10, 6)) > 0.5).astype(np.float64))
    probe = identifiability_probe(
        model, x, torch.tensor(rng.normal(size=(10, 3))), torch.tensor(rng.normal(size=(10, 3)))
    )
    assert probe["gap"] == 0.0


# --------------------------------------------------------------------------- Jacobian and IMA contrast
def numpy_contrast(J):
    return 0.5 * (np.log((J**2).sum(axis=0)).sum() - np.linalg.slogdet(J.T @ J)[1])


def test_jacobian_of_a_linear_decoder_is_its_matrix_and_bernoulli_means_scale_its_rows():
    model, rng = linear_model(likelihood="gaussian")
    z = torch.tensor(rng.normal(size=(5, 3)))
    J = decoder_jacobian(lambda v: decoder_mean(model, v), z)
    assert np.allclose(J.numpy(), np.broadcast_to(model.W.numpy(), (5, 6, 3)))
    model.likelihood = "bernoulli"
    J = decoder_jacobian(lambda v: decoder_mean(model, v), z)
    s = 1 / (1 + np.exp(-(z.numpy() @ model.W.numpy().T + model.b.numpy())))
    assert np.allclose(J.numpy(), (s * (1 - s))[:, :, None] * model.W.numpy()[None], atol=1e-12)


def test_ima_contrast_is_zero_for_orthogonal_columns_and_positive_otherwise():
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.normal(size=(8, 3)))[0] * np.array([0.01, 1.0, 50.0])  # orthogonal, unequal norms
    W = rng.normal(size=(8, 3))
    got = ima_contrast(torch.tensor(np.stack([Q, W])))
    assert got[0].item() == pytest.approx(0.0, abs=1e-10)
    assert got[1].item() == pytest.approx(numpy_contrast(W), rel=1e-10) and got[1].item() > 0
    singular = np.column_stack([W[:, 0], W[:, 0], W[:, 2]])
    assert math.isinf(ima_contrast(torch.tensor(singular[None]))[0].item())


@pytest.mark.parametrize("name", ["mlp", "lidvae"])
def test_batched_jacobian_matches_autograd_per_row(name):
    torch.manual_seed(0)
    arch = {"name": name, "input_shape": [10], "hidden": [6], "latent_dim": 3, "activation": "tanh", "icnn_hidden": [5]}
    model = build_model(arch).double()
    z = torch.randn(4, 3, dtype=torch.float64)
    J = decoder_jacobian(lambda v: decoder_mean(model, v), z)
    for i in range(4):
        ref = torch.autograd.functional.jacobian(lambda v: decoder_mean(model, v[None])[0], z[i])
        assert torch.allclose(J[i], ref, atol=1e-10)


def test_evenly_spaced_rows_are_bounded_sorted_and_span_the_set():
    rows = evenly_spaced_rows(10_000, 512)
    assert len(rows) == 512 and rows[0] == 0 and rows[-1] == 9_999 and np.all(np.diff(rows) > 0)
    assert np.array_equal(evenly_spaced_rows(7, 512), np.arange(7))


# --------------------------------------------------------------------------- through the audit
def certify(tmp_path, capsys, *source) -> dict:
    write_teacher(tmp_path / "teacher.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "certify",
                *map(str, source),
                "--teacher",
                str(tmp_path / "teacher.pt"),
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
    assert exit_info.value.code in (0, 1), capsys.readouterr().err
    return json.loads((tmp_path / "r" / "certificate.json").read_text())["diagnostics"]["model"]


def test_audit_reports_every_model_diagnostic_for_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    arch = {"name": "const-var", "input_shape": [D], "hidden": [8], "latent_dim": 4, "likelihood": "gaussian"}
    model = build_model(arch)
    save_checkpoint(tmp_path / "m.safetensors", model, arch, {"num_classes": K, "beta": 2.0, "offset": 0})
    x = data_x(60)
    np.save(tmp_path / "x.npy", x)
    diag = certify(tmp_path, capsys, "--model", tmp_path / "m.safetensors", "--data", tmp_path / "x.npy")
    assert diag["num_samples"] == 60
    assert all(
        diag[k]["computed"] for k in ("mutual_information", "self_consistency", "ima_contrast", "identifiability")
    )
    # The data term recomputed here from the model's own forward pass on all 60 rows.
    with torch.no_grad():
        mu = model.encode(torch.tensor(x))[0]
        expected = ((torch.tensor(x, dtype=torch.float64) - model.decode(mu).double()) ** 2).sum(1).mean()
    assert diag["self_consistency"]["data"] == pytest.approx(float(expected), rel=1e-5)
    assert diag["ima_contrast"]["mean"] >= 0 and diag["ima_contrast"]["num_samples"] == 60
    markdown = (tmp_path / "r" / "certificate.md").read_text()
    assert f"| IMA contrast of the decoder | {diag['ima_contrast']['mean']:.4f} |" in markdown
    assert f"| mutual information I_q(x; z) (nats) | {diag['mutual_information']['value']:.4f} |" in markdown


def test_precomputed_latents_give_mutual_information_only_with_log_variances(tmp_path, capsys):
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(40, 4)).astype(np.float32), rng.normal(size=(40, 4)).astype(np.float32)
    probs = rng.dirichlet(np.ones(K), size=40)
    save_numpy({"probs": probs}, str(tmp_path / "p.safetensors"))
    save_numpy({"mu": mu}, str(tmp_path / "mu.safetensors"))
    with pytest.raises(SystemExit):
        main(
            [
                "certify",
                "--latents",
                str(tmp_path / "mu.safetensors"),
                "--teacher-probs",
                str(tmp_path / "p.safetensors"),
                "--beta",
                "2",
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
    diag = json.loads((tmp_path / "r" / "certificate.json").read_text())["diagnostics"]["model"]
    assert diag["mutual_information"] == {"computed": False, "reason": "the encoder gives no log-variances"}
    assert diag["ima_contrast"]["computed"] is False
    save_numpy({"mu": mu, "logvar": logvar}, str(tmp_path / "mu.safetensors"))
    with pytest.raises(SystemExit):
        main(
            [
                "certify",
                "--latents",
                str(tmp_path / "mu.safetensors"),
                "--teacher-probs",
                str(tmp_path / "p.safetensors"),
                "--beta",
                "2",
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
    diag = json.loads((tmp_path / "r" / "certificate.json").read_text())["diagnostics"]["model"]
    eps = torch.randn((40, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    assert diag["mutual_information"]["value"] == pytest.approx(
        numpy_mi(mu.astype(np.float64), logvar.astype(np.float64), eps, 40), rel=1e-6
    )


def test_headline_numbers_pick_one_value_each_and_nan_where_not_computed():
    from auditor.audit.diagnostics import headline_numbers

    diag = {
        "mutual_information": {"computed": False, "reason": "no log-variances"},
        "self_consistency": {"computed": True, "latent": 1.5, "data": 2.5},
        "ima_contrast": {"computed": True, "mean": None, "num_singular": 3},
        "identifiability": {"computed": True, "gap": 0.25},
    }
    got = headline_numbers(diag)
    assert (
        got["self_consistency_latent"] == 1.5
        and got["self_consistency_data"] == 2.5
        and got["identifiability_gap"] == 0.25
    )
    assert math.isnan(got["mutual_information"]) and math.isnan(got["ima_contrast"])
    assert all(math.isnan(v) for v in headline_numbers(None).values())
