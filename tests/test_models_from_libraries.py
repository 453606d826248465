"""diffusers and pythae models, saved the way those libraries save them, certified with one command:
tiny real models built here, μ compared with the library's own output (through plain numpy's
certificate), the weights digest with the files' bytes, and every refusal one line with exit 2."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from . import reference as ref
from .cli_run import run
from .foreign_fixtures import (
    assert_refused,
    assert_same_certificate,
    certify,
    input_hashes,
    run_with_module_blocked,
    sha256,
    write_audit_inputs,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub

TINY_KL = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 32,
}


@pytest.fixture(scope="module")
def kl(tmp_path_factory):
    """A tiny AutoencoderKL saved with save_pretrained, and audit inputs of its size."""
    diffusers = pytest.importorskip("diffusers")
    import safetensors.torch  # noqa: F401  (diffusers < 0.31 needs it imported before save_pretrained)

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**TINY_KL).eval()
    root = tmp_path_factory.mktemp("diffusers")
    vae.save_pretrained(root / "tiny-kl")
    x = np.random.default_rng(1).uniform(0, 1, (24, 3, 32, 32)).astype(np.float32)
    return vae, root, write_audit_inputs(root, x), torch.from_numpy(x)


def test_a_diffusers_folder_is_certified_with_one_command(kl, capsys, tmp_path, monkeypatch):
    vae, root, args, x = kl
    folder = root / "tiny-kl"
    assert sorted(os.listdir(folder)) == ["config.json", "diffusion_pytorch_model.safetensors"]
    monkeypatch.chdir(tmp_path)  # the default report folder is reports/<the model folder's name>/
    code, _, err = run(["certify", "--model", folder, *args, "--quiet"], capsys)
    assert code in (0, 1), err
    cert = json.loads((tmp_path / "reports" / "tiny-kl" / "certificate.json").read_text())
    with torch.no_grad():
        dist = vae.encode(2 * x - 1).latent_dist  # the library's own call, on its own [-1, 1] range
    assert_same_certificate(cert, root, dist.mean, dist.logvar)
    model = cert["model"]
    assert model["encode"] == {
        "mean": "encode(x).latent_dist.mean",
        "logvar": "encode(x).latent_dist.logvar",
        "latent_shape": [4, 16, 16],
        "flattened": "C order (row-major over latent_shape)",
    }
    assert model["class"] == "AutoencoderKL" and model["scaling_factor"] == pytest.approx(0.18215)
    assert model["tiling"] is False and model["slicing"] is False and "[−1, 1]" in model["input_transform"]
    assert set(model["libraries"]) >= {"torch", "diffusers", "safetensors"}
    weights = folder / "diffusion_pytorch_model.safetensors"
    digest = ref.safetensors_file_digest(weights, lambda name: name.startswith(("encoder.", "quant_conv.")))
    assert model["weights_digest"]["sha256"] == digest
    hashes = input_hashes(cert)
    assert hashes[str(weights)] == ("model", sha256(weights))
    assert hashes[str(folder / "config.json")] == ("model-config", sha256(folder / "config.json"))


def test_a_pipeline_folder_with_sharded_weights_gives_the_librarys_means(kl, tmp_path):
    from auditor.audit.request import AuditRequest
    from auditor.sources.models.encode import read_means
    from auditor.sources.models.registry import model_source_for

    vae, _, _, x = kl
    vae.save_pretrained(tmp_path / "vae", max_shard_size="60KB")
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    index = {"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    request = AuditRequest(model=tmp_path)
    encoder = model_source_for(request).open(request)
    assert encoder.record["pipeline"] == "StableDiffusionPipeline" and len(encoder.record["weights"]) > 1
    assert {r.role for r in encoder.inputs} == {"model", "model-config"}
    with torch.no_grad():
        mu, logvar, _ = read_means(encoder.module, x[:5])
        dist = vae.encode(2 * x[:5] - 1).latent_dist
    assert torch.equal(mu, dist.mean.reshape(5, -1)) and torch.equal(logvar, dist.logvar.reshape(5, -1))


def test_what_a_diffusers_folder_cannot_be_is_refused(kl, tmp_path, capsys):
    _, root, args, _ = kl
    folder = root / "tiny-kl"
    config = json.loads((folder / "config.json").read_text())

    def model_folder(name, tensors=None, weights_name="diffusion_pytorch_model.safetensors", **changes):
        target = tmp_path / name
        target.mkdir()
        (target / "config.json").write_text(json.dumps({**config, **changes}))
        save_file(tensors or load_file(folder / "diffusion_pytorch_model.safetensors"), target / weights_name)
        return target

    tensors = load_file(folder / "diffusion_pytorch_model.safetensors")
    del tensors["quant_conv.weight"]  # diffusers itself would initialise it at random and only warn
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    cases = {
        "missing weight": (model_folder("missing", tensors), "missing_keys: quant_conv.weight"),
        "pickled weights only": (model_folder("bin", weights_name="diffusion_pytorch_model.bin"), "pickled .bin"),
        "not an autoencoder": (model_folder("unet", _class_name="UNet2DModel"), "is not a supported autoencoder"),
        "pipeline without vae": (tmp_path / "pipeline", "without vae/config.json"),
        "neither library's folder": (tmp_path / "empty", "a folder, but neither a diffusers model"),
    }
    for name, (model, fragment) in cases.items():
        assert_refused(["certify", "--model", model, *args, "--out", tmp_path / "r"], capsys, fragment), name
    upcast = model_folder("upcast", force_upcast=True)
    assert_refused(["certify", "--model", upcast, *args, "--precision", "fp16"], capsys, "force_upcast")
    assert_refused(["certify", "--model", folder, "--arch", "diffusers:AutoencoderKL", *args], capsys, "drop --arch")
    weights = folder / "diffusion_pytorch_model.safetensors"  # the default AutoencoderKL() is another network
    assert_refused(["certify", "--model", weights, "--arch", "diffusers:AutoencoderKL", *args], capsys, "do not match")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ pythae
@pytest.fixture(scope="module")
def pythae_vae(tmp_path_factory):
    """A tiny pythae VAE trained for a few steps through pythae's own loss, saved with model.save."""
    pytest.importorskip("pythae")
    from pythae.models import VAE, VAEConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.rand(32, 1, 8, 8)
    for _ in range(5):
        loss = model({"data": data}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    root = tmp_path_factory.mktemp("pythae")
    model.save(str(root / "final_model"))
    x = np.random.default_rng(2).uniform(0, 1, (40, 1, 8, 8)).astype(np.float32)
    return model, root, write_audit_inputs(root, x), torch.from_numpy(x)


def test_a_pythae_folder_is_certified_with_one_command(pythae_vae, capsys, tmp_path):
    model, root, args, x = pythae_vae
    folder = root / "final_model"
    assert sorted(os.listdir(folder)) == ["environment.json", "model.pt", "model_config.json"]
    cert = certify(["--model", folder, *args], capsys, tmp_path / "r")
    with torch.no_grad():
        out = model.encoder(x)  # pythae's own encoder; model.embed(x) would sample
        assert not torch.equal(model.embed(x), model.embed(x))
    assert_same_certificate(cert, root, out.embedding, out.log_covariance)
    entry = cert["model"]
    assert entry["encode"]["mean"] == "encode(x).embedding" and entry["model"] == "VAE"
    saved = torch.load(folder / "model.pt", weights_only=True)["model_state_dict"]
    expected = ref.digest_of_entries(
        [
            (name, "float32", list(t.shape), t.numpy().astype("<f4").tobytes())
            for name, t in saved.items()
            if name.startswith("encoder.")
        ]
    )
    assert entry["weights_digest"]["sha256"] == expected
    assert input_hashes(cert)[str(folder / "model.pt")] == ("model", sha256(folder / "model.pt"))
    for name, fragment in (("Sequential", "is not a pythae model config"), ("TrainerConfig", "pythae has no model")):
        other = tmp_path / name
        shutil.copytree(folder, other)
        (other / "model_config.json").write_text(json.dumps({"name": name}))
        assert_refused(["certify", "--model", other, *args], capsys, fragment)


@pytest.fixture(scope="module")
def pythae_custom(tmp_path_factory):
    """A pythae VAE whose encoder is a custom network: model.save pickles it into encoder.pkl."""
    pytest.importorskip("pythae")
    from pythae.models import VAE, VAEConfig

    root = tmp_path_factory.mktemp("pythae_custom")
    (root / "custom_nets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            from pythae.models.nn import BaseEncoder
            from pythae.models.base.base_utils import ModelOutput

            class TinyConvEncoder(BaseEncoder):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(1, 2, 3, padding=1)
                    self.mu = nn.Linear(2 * 8 * 8, 4)
                    self.lv = nn.Linear(2 * 8 * 8, 4)

                def forward(self, x):
                    h = torch.relu(self.conv(x)).flatten(1)
                    return ModelOutput(embedding=self.mu(h), log_covariance=self.lv(h))
            """
        )
    )
    sys.path.insert(0, str(root))
    try:
        import custom_nets

        torch.manual_seed(0)
        model = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=4), encoder=custom_nets.TinyConvEncoder()).eval()
        model.save(str(root / "model"))
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("custom_nets", None)
    (root / "custom_nets.py").unlink()  # the pickle carries the class's code itself
    x = np.random.default_rng(3).uniform(0, 1, (30, 1, 8, 8)).astype(np.float32)
    return model, root, write_audit_inputs(root, x), torch.from_numpy(x)


def test_a_custom_pythae_encoder_loads_only_with_trust_code(pythae_custom, capsys, tmp_path):
    model, root, args, x = pythae_custom
    folder = root / "model"
    assert "encoder.pkl" in os.listdir(folder)
    assert_refused(["certify", "--model", folder, *args], capsys, "add --trust-code only if you trust that file")
    cert = certify(["--model", folder, *args, "--trust-code"], capsys, tmp_path / "r")
    with torch.no_grad():
        out = model.encoder(x)
    assert_same_certificate(cert, root, out.embedding, out.log_covariance)
    assert cert["request"]["trust_code"] is True and cert["model"]["encoder_from"] == "encoder.pkl (trusted code)"
    assert input_hashes(cert)[str(folder / "encoder.pkl")][0] == "model-code"
    other_python = tmp_path / "py37"
    shutil.copytree(folder, other_python)
    (other_python / "environment.json").write_text(json.dumps({"name": "EnvironmentConfig", "python_version": "3.7"}))
    assert_refused(["certify", "--model", other_python, *args, "--trust-code"], capsys, "pickled by Python 3.7")


# ------------------------------------------------------------------------------------------ without the extras
def test_a_missing_extra_is_one_line_naming_it(kl, pythae_vae):
    for module, extra, (_, root, args, _) in (("diffusers", "diffusers", kl), ("pythae.models", "pythae", pythae_vae)):
        model = root / ("tiny-kl" if extra == "diffusers" else "final_model")
        result = run_with_module_blocked(module, ["certify", "--model", model, *args, "--out", root / "blocked"], root)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert f"pip install 'vae-audit[{extra}]'" in lines[0] and not (root / "blocked").exists()
