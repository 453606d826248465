"""PyTorch and Lightning checkpoints with `--arch file.py:factory` / `module:factory`, `--arch-arg`,
`--key-prefix` and `--state-key`; `audit verify` catching weights swapped behind an `--arch`
certificate; and encoder outputs the tool cannot use, each refused in one line with exit 2."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch

from .cli_run import run
from .foreign_fixtures import assert_refused, assert_same_certificate, certify, input_hashes, sha256, write_audit_inputs

# pytorch/examples' vae/main.py, its sizes made keyword arguments.
EXAMPLES_VAE = textwrap.dedent(
    """
    import torch
    from torch import nn
    import torch.nn.functional as F

    class VAE(nn.Module):
        def __init__(self, hidden=400, latent=20):
            super().__init__()
            self.fc1 = nn.Linear(784, hidden)
            self.fc21 = nn.Linear(hidden, latent)
            self.fc22 = nn.Linear(hidden, latent)
            self.fc3 = nn.Linear(latent, hidden)
            self.fc4 = nn.Linear(hidden, 784)

        def encode(self, x):
            h1 = F.relu(self.fc1(x.view(-1, 784)))
            return self.fc21(h1), self.fc22(h1)

        def decode(self, z):
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 784))
            return self.decode(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)), mu, logvar

    def make(hidden=400, latent=20):
        return VAE(hidden, latent)

    def make_bernoulli(hidden=400, latent=20, logits=False):
        # Declares the likelihood the decoder diagnostics need; only with logits=True does decode return logits.
        model = VAE(hidden, latent)
        model.likelihood = "bernoulli"
        if logits:
            model.decode = lambda z: model.fc4(F.relu(model.fc3(z)))
        return model
    """
)
ARCH_ARGS = ["--arch-arg", "hidden=32", "--arch-arg", "latent=3"]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The examples' VAE as a source file, one trained-looking instance of it, and audit inputs."""
    root = tmp_path_factory.mktemp("examples")
    (root / "examples_vae.py").write_text(EXAMPLES_VAE)
    spec = importlib.util.spec_from_file_location("examples_vae_fixture", root / "examples_vae.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so that torch.save can pickle a whole module of this class
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.make(hidden=32, latent=3).eval()
    x = np.random.default_rng(4).uniform(0, 1, (50, 784)).astype(np.float32)
    return model, root, write_audit_inputs(root, x), torch.from_numpy(x)


def test_the_pytorch_examples_vae_pth(examples, capsys, tmp_path):
    model, root, args, x = examples
    torch.save(model.state_dict(), tmp_path / "vae.pth")  # what the examples' users do
    source = root / "examples_vae.py"
    cert = certify(
        ["--arch", f"{source}:make", *ARCH_ARGS, "--model", tmp_path / "vae.pth", *args], capsys, tmp_path / "r"
    )
    with torch.no_grad():
        mu, logvar = model.encode(x)
    assert_same_certificate(cert, root, mu, logvar)
    entry = cert["model"]
    assert entry["kwargs"] == {"hidden": 32, "latent": 3} and entry["format"] == "torch"
    assert entry["encode"]["mean"] == "encode(x)[0]" and entry["encode"]["logvar"] == "encode(x)[1]"
    assert input_hashes(cert)[str(source)] == ("model-code", sha256(source))
    assert input_hashes(cert)[str(tmp_path / "vae.pth")] == ("model", sha256(tmp_path / "vae.pth"))
    # Its decoder returns probabilities and it declares no likelihood: the decoder diagnostics refuse.
    assert cert["diagnostics"]["model"]["identifiability"]["computed"] is False
    assert run(["verify", tmp_path / "r" / "certificate.json"], capsys)[0] == 0
    torch.save({k: v + 1 for k, v in model.state_dict().items()}, tmp_path / "vae.pth")
    code, out, _ = run(["verify", tmp_path / "r" / "certificate.json"], capsys)
    assert code == 1 and "differs  model" in out
    wrong = ["--arch", f"{source}:make", "--arch-arg", "hidden=16", "--model", tmp_path / "vae.pth", *args]
    assert_refused(["certify", *wrong], capsys, "tensor 'fc1.weight' has shape (32, 784)")


@pytest.mark.parametrize("kind", ["legacy", "deflated", "not a zip"])
def test_checkpoints_torch_could_allocate_from_are_refused_before_it_reads_them(examples, capsys, tmp_path, kind):
    """A legacy (pre-1.6) file makes torch allocate each storage at the size its pickle claims, a
    deflated record is inflated whole: neither reaches torch.load (the teacher's rule, for models)."""
    model, root, args, _ = examples
    path = tmp_path / "vae.pth"
    if kind == "legacy":
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
        fragment = "not a checkpoint in torch's zip format"
    elif kind == "deflated":
        import zipfile

        torch.save(model.state_dict(), tmp_path / "stored.pth")
        with zipfile.ZipFile(tmp_path / "stored.pth") as source, zipfile.ZipFile(path, "w") as out:
            for info in source.infolist():
                out.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
        fragment = "is compressed, which torch.save never does"
    else:
        path.write_bytes(b"\x80\x04K\x01." + bytes(64))  # a bare pickle
        fragment = "not a checkpoint in torch's zip format"
    base = ["--arch", f"{root / 'examples_vae.py'}:make", *ARCH_ARGS, "--model", path, *args]
    assert_refused(["certify", *base, "--out", tmp_path / "r"], capsys, fragment)
    assert not (tmp_path / "r").exists()


def test_the_decoder_diagnostics_refuse_probabilities_declared_as_bernoulli_logits(examples, capsys, tmp_path):
    model, root, args, _ = examples
    torch.save(model.state_dict(), tmp_path / "vae.pth")
    base = ["--arch", f"{root / 'examples_vae.py'}:make_bernoulli", *ARCH_ARGS, "--model", tmp_path / "vae.pth", *args]
    diagnostics = certify(base, capsys, tmp_path / "probs")["diagnostics"]["model"]
    for key in ("self_consistency", "ima_contrast", "identifiability"):
        assert diagnostics[key]["computed"] is False and "like probabilities" in diagnostics[key]["reason"]
    diagnostics = certify([*base, "--arch-arg", "logits=true"], capsys, tmp_path / "logits")["diagnostics"]["model"]
    assert all(diagnostics[key]["computed"] for key in ("self_consistency", "ima_contrast", "identifiability"))


def test_a_module_factory_and_a_training_state_file(examples, capsys, tmp_path, monkeypatch):
    model, root, args, x = examples
    both = {"model_state_dict": model.state_dict(), "ema": model.state_dict(), "epoch": 3}
    torch.save(both, tmp_path / "train_state.pt")
    monkeypatch.chdir(root)  # module:factory is imported from the current folder
    base = ["--arch", "examples_vae:VAE", *ARCH_ARGS, "--model", tmp_path / "train_state.pt", *args]
    cert = certify(base, capsys, tmp_path / "r")
    assert cert["model"]["state_key"] == "model_state_dict" and cert["model"]["factory_source"] == "examples_vae.py"
    with torch.no_grad():
        assert_same_certificate(cert, root, *model.encode(x))
    cert = certify([*base, "--state-key", "ema"], capsys, tmp_path / "r2")
    assert cert["model"]["state_key"] == "ema"
    assert_refused(["certify", *base, "--state-key", "nope"], capsys, "has no entry 'nope'")


def lightning_checkpoint(source: pathlib.Path, folder: pathlib.Path, **hparams) -> tuple[torch.nn.Module, pathlib.Path]:
    """A LightningModule holding the examples' VAE as ``self.model``, trained 2 steps and saved by the Trainer."""
    L = pytest.importorskip("lightning")
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)

    class LitVAE(L.LightningModule):
        def __init__(self, **kwargs):
            super().__init__()
            self.save_hyperparameters()
            self.model = namespace["make"](hidden=32, latent=3)

        def training_step(self, batch, _):
            recon, mu, logvar = self.model(batch[0])
            return ((recon - batch[0]) ** 2).sum() - 0.5 * (1 + logvar - mu**2 - logvar.exp()).sum()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    lit = LitVAE(**hparams)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(16, 784)), batch_size=8)
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=folder,
    )
    trainer.fit(lit, data)
    trainer.save_checkpoint(folder / "vae.ckpt")
    return lit.model.eval(), folder / "vae.ckpt"


def test_a_lightning_checkpoint_with_key_prefix(examples, capsys, tmp_path):
    _, root, args, x = examples
    source = root / "examples_vae.py"
    # Hyper-parameters that torch.load(weights_only=True) refuses: they are read as inert stand-ins.
    model, ckpt = lightning_checkpoint(
        source, tmp_path, lr=1e-3, cfg=argparse.Namespace(a=1), out=pathlib.Path("/runs")
    )
    capsys.readouterr()  # what Lightning printed while training
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)
    base = ["--arch", f"{source}:make", *ARCH_ARGS, "--model", ckpt, *args]
    assert_refused(["certify", *base], capsys, "try --key-prefix model.")
    cert = certify([*base, "--key-prefix", "model."], capsys, tmp_path / "r")
    with torch.no_grad():
        assert_same_certificate(cert, root, *model.encode(x))
    entry = cert["model"]
    assert entry["format"] == "lightning" and entry["state_key"] == "state_dict" and entry["key_prefix"] == "model."
    assert sorted(entry["inert_stand_ins"]) == ["argparse.Namespace", "pathlib.PosixPath"]
    assert entry["lightning"]["global_step"] == 2
    assert_refused(["certify", *base, "--key-prefix", "encoder."], capsys, "no tensor name starts with")


def test_weights_swapped_behind_an_arch_factory_are_caught_by_verify(examples, capsys, tmp_path):
    model, root, args, _ = examples
    (tmp_path / "own_weights.py").write_text(
        "import torch\nfrom examples_vae import make\n"
        "def load(path):\n"
        "    model = make(hidden=32, latent=3)\n"
        "    model.load_state_dict(torch.load(path, weights_only=True))\n"
        "    return model\n"
    )
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "examples_vae.py").write_text(EXAMPLES_VAE)
    spec = ["--arch", f"{tmp_path / 'own_weights.py'}:load", "--arch-arg", f"path={tmp_path / 'w.pt'}"]
    cert = certify([*spec, *args], capsys, tmp_path / "r")
    assert {i["role"] for i in cert["inputs"]} >= {"model-code"}  # no weights file: the factory loads them
    verify = ["verify", tmp_path / "r" / "certificate.json"]
    assert_refused(verify, capsys, "cannot re-identify the model without running code")
    code, out, _ = run([*verify, "--trust-code"], capsys)
    assert code == 0 and "ok       model weights" in out
    torch.save({k: v * 0.5 for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    code, out, _ = run([*verify, "--trust-code"], capsys)
    assert code == 1 and "differs  model weights" in out and "weights differ from the certified ones" in out


def test_encoder_outputs_and_flags_that_cannot_be_used(examples, capsys, tmp_path, monkeypatch):
    model, root, args, _ = examples
    (root / "odd_outputs.py").write_text(
        "import torch\n"
        "class Sampled(torch.nn.Module):\n"
        "    def encode(self, x):\n"
        "        return {'z': x[:, :3], 'sample': x[:, :3]}\n"
        "class Whole(torch.nn.Module):\n"
        "    def encode(self, x):\n"
        "        return x[:1]\n"
    )
    torch.save(model, tmp_path / "whole.pt")  # a whole pickled module: its class's code would have to run
    monkeypatch.chdir(root)
    source = f"{root / 'examples_vae.py'}:make"
    cases = {
        "sampled only": (["--arch", "odd_outputs:Sampled", *args], "no tensor mean, mu, embedding"),
        "not per sample": (["--arch", "odd_outputs:Whole", *args], "first dimension must be the batch"),
        "pickled module": (
            ["--arch", source, "--model", tmp_path / "whole.pt", *args],
            "examples_vae_fixture.VAE, not a",
        ),
        "bad arch-arg": (["--arch", source, "--arch-arg", "2x=1", *args], "Python identifier"),
        "arch-arg alone": (["--model", tmp_path / "whole.pt", "--arch-arg", "a=1", *args], "--arch-arg needs --arch"),
        "prefix alone": (["--arch", source, "--key-prefix", "model.", *args], "--key-prefix needs --arch and --model"),
        "factory fails": (["--arch", source, "--arch-arg", "size=3", *args], "unexpected keyword argument 'size'"),
        "no such file": (["--arch", "missing/vae.py:make", *args], "no such file"),
        "not a weights file": (["--arch", source, "--model", root / "x.npy", *args], "reads weights from .safetensors"),
    }
    for name, (flags, fragment) in cases.items():
        assert_refused(["certify", *flags, "--out", tmp_path / "r"], capsys, fragment), name
    assert not (tmp_path / "r").exists()
