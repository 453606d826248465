"""No silent wrong numbers: a `.npy` of means has no log-variances, an encoder that samples is
refused, a decoder diagnostic that cannot run says so, and extreme but finite inputs give a
certificate that `audit report` and `audit verify` accept — or a clear refusal."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from . import reference as ref
from .cli_run import run
from .report_fixtures import BETA, K, audit_arrays

DECODERS = '''
import torch
from torch import nn
from torch.autograd.function import once_differentiable


class Doubling(torch.autograd.Function):
    """2·x with a backward that cannot itself be differentiated."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return 2 * grad


class Vae(nn.Module):
    likelihood = "bernoulli"

    def __init__(self, d=6, D=8, sampling=False, dropout=0.0):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(nn.Dropout(dropout), nn.Linear(D, 2 * d))
        self.dec = nn.Linear(d, D)
        self.d, self.sampling = d, sampling

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        if self.sampling:
            return mu + torch.randn_like(mu) * (0.5 * logvar).exp(), logvar
        return mu, logvar


class FourDimensionalDecoder(Vae):
    def __init__(self):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(self.d, 8, 1)

    def decode(self, z):  # z of shape (B, d, 1, 1), as convolutional decoders take it
        return self.deconv(z).flatten(1)


class OnceDifferentiableDecoder(Vae):
    def decode(self, z):
        return Doubling.apply(self.dec(z))


def sampling():
    return Vae(sampling=True)


def dropout_in_training_mode():
    return Vae(dropout=0.5).train()


def four_dimensional():
    return FourDimensionalDecoder()


def once_differentiable_decoder():
    return OnceDifferentiableDecoder()
'''


@pytest.fixture
def factory_folder(tmp_path, monkeypatch):
    """A folder with the factories above, data x.npy (8 features) and teacher probabilities."""
    (tmp_path / "factories.py").write_text(textwrap.dedent(DECODERS))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.uniform(size=(40, 8)).astype(np.float32))
    np.save(tmp_path / "probs.npy", ref.softmax(rng.normal(size=(40, 3))))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _certify_factory(name: str, capsys) -> tuple[int, str]:
    args = ["--arch", f"factories:{name}", "--data", "x.npy", "--teacher-probs", "probs.npy", "--beta", "1"]
    code, _, err = run(["certify", *args, "--out", "r", "--quiet"], capsys)
    return code, err


def _report_and_verify(folder, capsys, *verify_flags: str) -> None:
    """What certify wrote, report renders and verify accepts."""
    certificate = folder / "certificate.json"
    assert run(["report", certificate, "--format", "md,html,junit"], capsys)[0] == 0
    assert run(["verify", certificate, *verify_flags], capsys)[0] == 0


# ------------------------------------------------------------------ a .npy of means is μ only
def test_a_single_array_npy_is_means_without_log_variances(tmp_path, capsys):
    mu, p = audit_arrays(60)
    np.save(tmp_path / "mu.npy", mu)
    np.save(tmp_path / "probs.npy", p)
    args = ["--latents", tmp_path / "mu.npy", "--teacher-probs", tmp_path / "probs.npy", "--beta", BETA]
    code, _, err = run(["certify", *args, "--out", tmp_path / "r", "--quiet"], capsys)
    assert code in (0, 1), err
    diagnostics = json.loads((tmp_path / "r" / "certificate.json").read_text())["diagnostics"]
    assert diagnostics["mean_prior_kl"] is None and diagnostics["prior_kl_per_dim"] is None
    assert diagnostics["model"]["mutual_information"] == {
        "computed": False,
        "reason": "the encoder gives no log-variances",
    }


def test_log_variances_in_an_npz_still_give_the_prior_kl(tmp_path, capsys):
    mu, p = audit_arrays(60)
    logvar = np.random.default_rng(1).normal(size=mu.shape) * 0.3
    np.savez(tmp_path / "lat.npz", mu=mu, logvar=logvar)
    np.save(tmp_path / "probs.npy", p)
    args = ["--latents", tmp_path / "lat.npz", "--teacher-probs", tmp_path / "probs.npy", "--beta", BETA]
    run(["certify", *args, "--out", tmp_path / "r", "--quiet"], capsys)
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    expected = ref.diagnostics(mu, logvar)["mean_prior_kl"]
    assert cert["diagnostics"]["mean_prior_kl"] == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ the encoder must give the mean
def test_an_encoder_that_samples_is_refused(factory_folder, capsys):
    code, err = _certify_factory("sampling", capsys)
    assert code == 2
    assert "gave different means for the same 8 inputs" in err and "not a sample" in err
    assert not (factory_folder / "r").exists()


def test_the_encoder_runs_in_eval_mode(factory_folder, capsys):
    """Dropout left on by the factory would make every pass different; the audit turns it off."""
    code, err = _certify_factory("dropout_in_training_mode", capsys)
    assert code in (0, 1), err


# ------------------------------------------------------------------ a diagnostic that cannot run says why
def test_a_decoder_that_cannot_take_flat_z_costs_only_its_diagnostics(factory_folder, capsys):
    code, err = _certify_factory("four_dimensional", capsys)
    assert code in (0, 1), err
    model = json.loads((factory_folder / "r" / "certificate.json").read_text())["diagnostics"]["model"]
    for key in ("self_consistency", "ima_contrast", "identifiability"):
        assert model[key]["computed"] is False and model[key]["reason"].startswith("failed: RuntimeError"), key
    assert model["mutual_information"]["computed"] is True
    _report_and_verify(factory_folder / "r", capsys, "--trust-code")  # the factory is the model: rebuilt to check it


def test_a_module_without_double_backward_costs_only_the_ima_contrast(factory_folder, capsys):
    """Its Jacobians once came out as zeros, silently: every row 'singular', and no mean."""
    code, err = _certify_factory("once_differentiable_decoder", capsys)
    assert code in (0, 1), err
    model = json.loads((factory_folder / "r" / "certificate.json").read_text())["diagnostics"]["model"]
    assert model["ima_contrast"]["computed"] is False and model["ima_contrast"]["reason"].startswith("failed: ")
    assert model["self_consistency"]["computed"] is True and model["identifiability"]["computed"] is True
    _report_and_verify(factory_folder / "r", capsys, "--trust-code")  # the factory is the model: rebuilt to check it


# ------------------------------------------------------------------ extreme but finite inputs
def _certify_latents(tmp_path, capsys, mu: np.ndarray, p: np.ndarray, beta: float) -> tuple[int, str]:
    np.savez(tmp_path / "lat.npz", mu=mu, logvar=np.zeros_like(mu))
    np.save(tmp_path / "probs.npy", p)
    args = ["--latents", tmp_path / "lat.npz", "--teacher-probs", tmp_path / "probs.npy", "--beta", repr(beta)]
    code, _, err = run(["certify", *args, "--out", tmp_path / "r", "--quiet"], capsys)
    return code, err


@pytest.mark.parametrize("scale, beta", [(1e100, BETA), (1.0, 1e100), (1e-200, BETA)])
def test_huge_but_safe_inputs_give_the_right_certificate(tmp_path, capsys, scale, beta):
    """β·|μ| up to 1e100: witness logits of 1e100 are finite, and so is every number of the certificate."""
    mu, p = audit_arrays(50)
    code, err = _certify_latents(tmp_path, capsys, mu * scale, p, beta)
    assert code in (0, 1), err
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    exact = ref.certificate(mu * scale, p, K, beta, confidence=0.95)
    assert cert["margin"] == pytest.approx(exact["margin"], rel=1e-9, abs=1e-12)
    assert cert["margin_lcb"] == pytest.approx(exact["margin_lcb"], rel=1e-9, abs=1e-12)
    assert cert["verdict"] == ("certified" if code == 0 else "not_certified")
    _report_and_verify(tmp_path / "r", capsys)


@pytest.mark.parametrize("scale, beta", [(1e200, BETA), (1.0, 1e200), (1.0, 1e-200)])
def test_inputs_beyond_float64_are_refused_clearly(tmp_path, capsys, scale, beta):
    mu, p = audit_arrays(50)
    code, err = _certify_latents(tmp_path, capsys, mu * scale, p, beta)
    assert code == 2 and err.startswith("error: the numbers overflow float64 (")
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()
