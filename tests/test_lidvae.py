"""`lidvae`: convex potentials, monotone gradients, an injective decoder, the file format and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from auditor.cli.app import main
from auditor.errors import AuditInputError
from auditor.nets.lidvae import ICNN, LIDVAE, orthonormal_columns
from auditor.nets.registry import build_model
from auditor.sources.checkpoint import load_checkpoint, save_checkpoint

from .certify_fixtures import D, K, data_x, write_teacher
from .method_fixtures import digits_teacher, train_and_certify  # noqa: F401 (fixture)

ARCH = {
    "name": "lidvae",
    "input_shape": [D],
    "hidden": [16],
    "latent_dim": 3,
    "activation": "relu",
    "likelihood": "bernoulli",
    "icnn_hidden": [8, 8],
    "convexity": 0.05,
    "singular_values": [0.5, 2.0],
}
WITNESS = {"num_classes": K, "beta": 2.0, "offset": 0}


def scrambled(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Large random parameters, so the tests do not only see the near-quadratic initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


@pytest.mark.parametrize("seed", range(4))
def test_potential_is_convex_and_its_gradient_strongly_monotone(seed):
    torch.manual_seed(seed)
    icnn = scrambled(ICNN(5, [7, 6], convexity=0.1).double(), seed)
    a, b = torch.randn(200, 5, dtype=torch.float64) * 3, torch.randn(200, 5, dtype=torch.float64) * 3
    psi = icnn.potential
    # Midpoint convexity of ψ itself ...
    assert torch.all(psi((a + b) / 2) <= (psi(a) + psi(b)) / 2 + 1e-9)
    # ... and ⟨∇ψ(a) − ∇ψ(b), a − b⟩ ≥ α‖a − b‖² ≥ 0 (strong monotonicity from the α‖y‖²/2 term).
    inner = ((icnn(a) - icnn(b)) * (a - b)).sum(dim=1)
    assert torch.all(inner >= 0.1 * ((a - b) ** 2).sum(dim=1) - 1e-9)


def test_gradient_map_is_the_gradient_of_the_potential():
    icnn = scrambled(ICNN(4, [5], convexity=0.2).double(), 7)
    y = torch.randn(6, 4, dtype=torch.float64)
    eps = 1e-6
    numeric = torch.stack(
        [
            (icnn.potential(y + eps * e) - icnn.potential(y - eps * e)) / (2 * eps)
            for e in torch.eye(4, dtype=torch.float64)
        ],
        dim=1,
    )
    assert torch.allclose(icnn(y), numeric, atol=1e-6)
    with torch.no_grad():  # the audit's encode() runs without gradients; the map must still work
        assert torch.allclose(icnn(y), numeric, atol=1e-6)
    with torch.inference_mode():
        assert torch.allclose(icnn(y.clone()), numeric, atol=1e-6)


def test_linear_map_has_bounded_singular_values_and_orthonormal_factors():
    model = scrambled(build_model(ARCH), 3, scale=3.0)
    B = model.decoder.B
    U = orthonormal_columns(B.u_raw).detach().numpy()
    assert np.allclose(U.T @ U, np.eye(3), atol=1e-5)
    s = np.linalg.svd(B.matrix().detach().numpy().astype(np.float64), compute_uv=False)
    expected = 0.5 + 1.5 / (1 + np.exp(-B.s_raw.detach().numpy().astype(np.float64)))
    assert np.allclose(np.sort(s), np.sort(expected), rtol=1e-5)
    assert s.min() >= 0.5 - 1e-5 and s.max() <= 2.0 + 1e-5


@pytest.mark.parametrize("seed", range(3))
def test_decoder_jacobian_is_injective_at_sampled_latents(seed):
    model = scrambled(build_model(ARCH), seed).double()
    for z in torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2:
        J = torch.autograd.functional.jacobian(lambda v: model.decode(v[None]).reshape(-1), z)
        assert J.shape == (D, 3)
        # J = J_g2 · B · J_g1 with J_g ⪰ αI and σ(B) ≥ s_min, so σ_min(J) ≥ α² s_min > 0.
        assert np.linalg.svd(J.numpy(), compute_uv=False).min() >= 0.05**2 * 0.5 * (1 - 1e-6)


def test_decoder_trains_through_the_gradient_maps():
    model = build_model(ARCH)
    z = torch.randn(4, 3, requires_grad=True)
    model.decode(z).square().sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    for name, p in model.decoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_checkpoint_round_trip_keeps_every_tensor_and_output(tmp_path):
    torch.manual_seed(0)
    model = build_model(ARCH)
    path = tmp_path / "lid.safetensors"
    save_checkpoint(path, model, ARCH, WITNESS, {"method": "lidvae"})
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt.model, LIDVAE) and ckpt.architecture == ARCH
    for name, tensor in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[name], tensor), name
    x, z = torch.rand(5, D), torch.randn(5, 3)
    assert torch.equal(ckpt.model.encode(x)[0], model.encode(x)[0])
    assert torch.allclose(ckpt.model.decode(z), model.decode(z))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"singular_values": [2.0, 1.0]}, "singular_values"),
        ({"singular_values": [0.0, 1.0]}, "singular_values"),
        ({"convexity": -1}, "convexity"),
        ({"icnn_hidden": [0]}, "icnn_hidden"),
        ({"latent_dim": D + 1}, "latent_dim"),
    ],
)
def test_bad_architecture_fields_are_input_errors(change, message):
    with pytest.raises(AuditInputError, match=message):
        build_model({**ARCH, **change})


def test_lidvae_checkpoint_certifies_through_the_cli(tmp_path, capsys):
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "lid.safetensors", build_model(ARCH), ARCH, WITNESS)
    np.save(tmp_path / "x.npy", data_x())
    write_teacher(tmp_path / "teacher.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "certify",
                "--model",
                str(tmp_path / "lid.safetensors"),
                "--teacher",
                str(tmp_path / "teacher.pt"),
                "--data",
                str(tmp_path / "x.npy"),
                "--out",
                str(tmp_path / "report"),
                "--quiet",
            ]
        )
    assert exit_info.value.code in (0, 1)
    assert capsys.readouterr().err == ""
    cert = json.loads((tmp_path / "report" / "certificate.json").read_text())
    assert cert["model"]["architecture"]["name"] == "lidvae" and cert["num_samples"] == 60


@pytest.mark.parametrize("method, certified", [("lidvae", None), ("lidvae-aligned", True)])
def test_method_trains_on_digits_and_certifies_through_the_cli(method, certified, tmp_path, capsys, digits_teacher):
    cert = train_and_certify(method, tmp_path, capsys, digits_teacher)
    assert cert["model"]["architecture"]["name"] == "lidvae"
    if certified:
        assert cert["verdict"] == "certified"
    assert cert["diagnostics"]["model"]["ima_contrast"]["computed"]


def test_decoder_hyper_parameters_come_from_the_config_extra_and_are_checked():
    from auditor.training.config import TrainConfig, resolve_config
    from auditor.training.methods.registry import get_method

    cfg = resolve_config(TrainConfig(method="lidvae", extra={"convexity": 1.0, "singular_values": [1.0, 4.0]}), None)
    arch = get_method("lidvae").architecture(cfg, (D,))
    assert arch["convexity"] == 1.0 and arch["singular_values"] == [1.0, 4.0] and arch["icnn_hidden"] == [64, 64]
    assert isinstance(build_model(arch), LIDVAE)
    bad = get_method("lidvae").architecture(
        resolve_config(TrainConfig(method="lidvae", extra={"convexity": 0}), None), (D,)
    )
    with pytest.raises(AuditInputError, match="convexity"):
        build_model(bad)


def test_lidvae_method_refuses_another_architecture_flag():
    from auditor.training.config import TrainConfig, resolve_config

    with pytest.raises(AuditInputError, match="drop --arch conv"):
        resolve_config(TrainConfig(method="lidvae", arch="conv"), None)
