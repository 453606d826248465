"""`const-var`: means-only encoder, one shared posterior variance, the file format and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from auditor.cli.app import main
from auditor.errors import AuditInputError
from auditor.nets.registry import build_model
from auditor.sources.checkpoint import load_checkpoint, save_checkpoint

from . import reference as ref
from .certify_fixtures import D, K, data_x, teacher_arrays, write_teacher
from .method_fixtures import digits_teacher, train_and_certify  # noqa: F401 (fixture)

LATENT = 4
ARCH = {
    "name": "const-var",
    "input_shape": [D],
    "hidden": [8],
    "latent_dim": LATENT,
    "activation": "relu",
    "likelihood": "gaussian",
    "posterior_variance": "shared",
}
WITNESS = {"num_classes": K, "beta": 2.0, "offset": 0}


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.0.weight": torch.randn(8, D, generator=g) * 0.5,
        "encoder.0.bias": torch.randn(8, generator=g) * 0.1,
        "encoder.1.weight": torch.randn(LATENT, 8, generator=g) * 0.5,
        "encoder.1.bias": torch.randn(LATENT, generator=g),
        "decoder.0.weight": torch.randn(8, LATENT, generator=g),
        "decoder.0.bias": torch.zeros(8),
        "decoder.1.weight": torch.randn(D, 8, generator=g),
        "decoder.1.bias": torch.zeros(D),
        "posterior_logvar": torch.tensor([-1.5]),
    }


def test_encoder_has_half_the_outputs_and_one_shared_log_variance():
    mlp = build_model({**ARCH, "name": "mlp"})
    model = build_model(ARCH)
    assert model.encoder[-1].out_features * 2 == mlp.encoder[-1].out_features
    assert model.state_dict()["posterior_logvar"].shape == (1,)
    mu, logvar = model.encode(torch.rand(5, D))
    assert mu.shape == logvar.shape == (5, LATENT)
    assert torch.all(logvar == model.posterior_logvar)
    assert (
        model.likelihood == "gaussian"
        and build_model({k: v for k, v in ARCH.items() if k != "likelihood"}).likelihood == "gaussian"
    )


def test_file_written_by_plain_safetensors_reads_back_with_numpy_means(tmp_path):
    t = tensors()
    save_file(
        t,
        str(tmp_path / "cv.safetensors"),
        metadata={
            "vae_audit.format": "1",
            "vae_audit.architecture": json.dumps(ARCH),
            "vae_audit.witness": json.dumps(WITNESS),
        },
    )
    model = load_checkpoint(tmp_path / "cv.safetensors").model
    x = data_x(7)
    w = {k: v.numpy().astype(np.float64) for k, v in t.items()}
    h = np.maximum(x @ w["encoder.0.weight"].T + w["encoder.0.bias"], 0)
    mu_np = h @ w["encoder.1.weight"].T + w["encoder.1.bias"]
    mu, logvar = model.encode(torch.from_numpy(x))
    assert np.allclose(mu.detach().numpy(), mu_np, atol=1e-5)
    assert np.allclose(logvar.detach().numpy(), -1.5)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(ARCH)
    with torch.no_grad():
        model.posterior_logvar.fill_(-0.7)
    save_checkpoint(tmp_path / "cv.safetensors", model, ARCH, WITNESS)
    loaded = load_checkpoint(tmp_path / "cv.safetensors")
    assert loaded.architecture["posterior_variance"] == "shared"
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name


def test_other_posterior_variance_is_an_input_error():
    with pytest.raises(AuditInputError, match="posterior_variance"):
        build_model({**ARCH, "posterior_variance": "per-sample"})


def test_certificate_reads_means_and_the_shared_variance(tmp_path, capsys):
    t = tensors(3)
    save_file(
        t,
        str(tmp_path / "cv.safetensors"),
        metadata={
            "vae_audit.format": "1",
            "vae_audit.architecture": json.dumps(ARCH),
            "vae_audit.witness": json.dumps(WITNESS),
        },
    )
    x = data_x()
    np.save(tmp_path / "x.npy", x)
    write_teacher(tmp_path / "teacher.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "certify",
                "--model",
                str(tmp_path / "cv.safetensors"),
                "--teacher",
                str(tmp_path / "teacher.pt"),
                "--data",
                str(tmp_path / "x.npy"),
                "--out",
                str(tmp_path / "report"),
                "--quiet",
            ]
        )
    assert exit_info.value.code in (0, 1) and capsys.readouterr().err == ""
    cert = json.loads((tmp_path / "report" / "certificate.json").read_text())
    w = {k: v.numpy().astype(np.float64) for k, v in t.items()}
    mu = (
        np.maximum(x @ w["encoder.0.weight"].T + w["encoder.0.bias"], 0) @ w["encoder.1.weight"].T + w["encoder.1.bias"]
    )
    p = ref.pca_gmm_probs(x.astype(np.float64), teacher_arrays())
    assert cert["margin"] == pytest.approx(ref.certificate(mu, p, K, 2.0)["margin"], rel=1e-5, abs=1e-6)
    # KL(N(μ, σ²I) ‖ N(0, I)) per dimension with the one shared σ² = e^−1.5.
    kl = 0.5 * (mu**2 + np.exp(-1.5) + 1.5 - 1).mean(axis=0)
    assert np.allclose(cert["diagnostics"]["prior_kl_per_dim"], kl, rtol=1e-5)


@pytest.mark.parametrize("method, certified", [("const-var", None), ("const-var-aligned", True)])
def test_method_trains_on_digits_and_certifies_through_the_cli(method, certified, tmp_path, capsys, digits_teacher):
    cert = train_and_certify(method, tmp_path, capsys, digits_teacher)
    assert cert["model"]["architecture"]["name"] == "const-var"
    assert cert["model"]["architecture"]["posterior_variance"] == "shared"
    if certified:
        assert cert["verdict"] == "certified"
    assert cert["diagnostics"]["model"]["mutual_information"]["computed"]
