"""`audit train`: checkpoints that certify unchanged, the monitor CSV, provenance, determinism,
the methods' loss terms against hand formulas, the conv architecture, and every bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from auditor.certificate.witness import WitnessSpec, witness_matrix
from auditor.cli.app import main
from auditor.nets.likelihood import reconstruction_nll
from auditor.nets.registry import build_model
from auditor.sources.checkpoint import load_checkpoint, save_checkpoint
from auditor.sources.datasets.registry import open_dataset
from auditor.sources.hashing import sha256_file
from auditor.sources.teachers.files import save_teacher
from auditor.teachers.fit import fit_pca_gmm
from auditor.training.config import TrainConfig
from auditor.training.losses import alignment_loss, prior_kl_per_dim
from auditor.training.methods.registry import METHODS, get_method
from auditor.training.trainer import prefit_targets

from . import reference as ref
from .cli_run import run
from .data_fixtures import write_cifar10_binary
from .method_fixtures import save_digits_teacher


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return save_digits_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")


def train_args(teacher: Path, out: Path, *extra) -> list:
    return [
        "train",
        "--data",
        "digits",
        "--teacher",
        teacher,
        "--seed",
        "0",
        "--out",
        out,
        "--quiet",
        "--epochs",
        "12",
        *extra,
    ]


@pytest.fixture(scope="module")
def aligned(teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aligned") / "aligned.safetensors"
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in train_args(teacher, out, "--method", "aligned")])
    assert exc.value.code == 0
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_aligned_checkpoint_certifies_unchanged_and_the_monitor_is_the_certificate(aligned, teacher, tmp_path, capsys):
    code, _, err = run(
        [
            "certify",
            "--model",
            aligned,
            "--teacher",
            teacher,
            "--data",
            "digits",
            "--split",
            "test",
            "--out",
            tmp_path / "test",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    # The monitor's last row on the training split equals `audit certify --split train`.
    run(
        [
            "certify",
            "--model",
            aligned,
            "--teacher",
            teacher,
            "--data",
            "digits",
            "--split",
            "train",
            "--out",
            tmp_path / "train",
            "--quiet",
        ],
        capsys,
    )
    cert = json.loads((tmp_path / "train" / "certificate.json").read_text())
    rows = read_csv(aligned.with_suffix(".csv"))
    assert [int(r["epoch"]) for r in rows] == list(range(13))
    last = rows[-1]
    for key in ("margin", "teacher_information", "alignment_loss"):
        assert float(last[key]) == pytest.approx(cert[key], rel=1e-6, abs=1e-9)
    assert float(last["margin_lcb"]) == pytest.approx(cert["margin_lcb"], rel=1e-6)
    assert int(last["active_units"]) == cert["diagnostics"]["active_units"]
    assert float(last["escape_force"]) == pytest.approx(cert["diagnostics"]["escape_force"], rel=1e-6)
    assert float(rows[0]["margin"]) < float(last["margin"])  # alignment raised the margin


def test_monitor_margin_matches_numpy_reference(aligned, teacher):
    ckpt = load_checkpoint(aligned)
    train = open_dataset("digits", "train")
    x = torch.from_numpy(train.read(0, train.num_samples))
    from auditor.sources.teachers.files import load_teacher

    p = load_teacher(teacher)(x).numpy()
    with torch.no_grad():
        mu = ckpt.model.encode(x)[0].double().numpy()
    expected = ref.certificate(mu, p, 10, 2.0)
    last = read_csv(aligned.with_suffix(".csv"))[-1]
    assert float(last["margin"]) == pytest.approx(expected["margin"], rel=1e-6, abs=1e-8)


def test_provenance_records_method_hyperparameters_data_and_teacher(aligned, teacher):
    ckpt = load_checkpoint(aligned)
    assert ckpt.witness == {"num_classes": 10, "beta": 2.0, "offset": 0}
    assert ckpt.architecture == {
        "name": "mlp",
        "input_shape": [64],
        "hidden": [128],
        "latent_dim": 16,
        "activation": "relu",
        "likelihood": "bernoulli",
    }
    t = ckpt.training
    assert t["method"] == "aligned" and t["seed"] == 0 and t["epochs"] == 12 and t["epochs_run"] == 12
    assert t["kl_weight"] == 1.0 and t["align_weight"] == 10.0 and t["beta"] == 2.0 and t["lr"] == 2e-3
    assert t["batch_size"] == 128 and t["protocol"] is None and t["init"] is None
    assert t["data"]["spec"] == "digits" and t["data"]["split"] == "train" and t["data"]["num_samples"] == 1437
    assert t["teacher"]["sha256"] == sha256_file(teacher)
    assert t["tool_version"]


def test_same_seed_gives_identical_checkpoint_bytes(teacher, tmp_path, capsys):
    outs = [tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"]
    for out, seed in zip(outs, (0, 0, 1)):
        args = train_args(teacher, out, "--method", "kl-anneal", "--epochs", "3")
        args[args.index("--seed") + 1] = str(seed)
        assert run(args, capsys)[0] == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert outs[0].read_bytes() != outs[2].read_bytes()


def test_every_method_trains_and_writes_a_loadable_checkpoint(teacher, tmp_path, capsys):
    for name in ("vanilla", "prefit", "beta", "free-bits", "cyclical"):
        out = tmp_path / f"{name}.safetensors"
        code, _, err = run(train_args(teacher, out, "--method", name, "--epochs", "2", "--prefit-epochs", "1"), capsys)
        assert code == 0, err
        ckpt = load_checkpoint(out)
        assert ckpt.training["method"] == name
        phases = [r["phase"] for r in read_csv(out.with_suffix(".csv"))]
        assert phases == ["init", *(["prefit"] if name == "prefit" else []), "elbo", "elbo"]


def test_collapse_then_rescue_protocols_stop_on_their_conditions(aligned, teacher, tmp_path, capsys):
    collapsed = tmp_path / "collapse.safetensors"
    code, _, err = run(
        train_args(teacher, collapsed, "--protocol", "collapse", "--init", aligned, "--epochs", "40"), capsys
    )
    assert code == 0, err
    t = load_checkpoint(collapsed).training
    assert t["method"] == "vanilla" and t["kl_weight"] == 8.0 and t["init"]["sha256"] == sha256_file(aligned)
    rows = read_csv(collapsed.with_suffix(".csv"))
    assert float(rows[0]["margin"]) > 0  # it started certified
    assert t["stopped_by"] == "collapse" and float(rows[-1]["margin"]) <= 0
    assert all(float(r["margin"]) > 0 for r in rows[:-1])  # stopped at the first epoch in the constant regime
    assert all(float(r["align_weight"]) == 0 for r in rows[1:])

    rescued = tmp_path / "rescue.safetensors"
    code, _, err = run(
        train_args(teacher, rescued, "--protocol", "rescue", "--init", collapsed, "--epochs", "40"), capsys
    )
    assert code == 0, err
    rows = read_csv(rescued.with_suffix(".csv"))
    assert load_checkpoint(rescued).training["stopped_by"] == "rescue"
    assert rows[-1]["certified"] == "True" and all(r["certified"] == "False" for r in rows[:-1])


def test_init_without_protocol_resumes_the_same_architecture_and_witness(aligned, teacher, tmp_path, capsys):
    out = tmp_path / "resumed.safetensors"
    code, _, err = run(train_args(teacher, out, "--method", "aligned", "--init", aligned, "--epochs", "1"), capsys)
    assert code == 0, err
    before, after = load_checkpoint(aligned), load_checkpoint(out)
    assert after.architecture == before.architecture and after.witness == before.witness
    assert after.training["init"] == {"path": str(aligned), "sha256": sha256_file(aligned)}
    rows = read_csv(out.with_suffix(".csv"))
    assert float(rows[0]["margin"]) == pytest.approx(
        float(read_csv(aligned.with_suffix(".csv"))[-1]["margin"]), rel=1e-9
    )


# ------------------------------------------------------------------ loss terms by hand
def test_reconstruction_and_prior_kl_match_plain_formulas():
    arch = {"name": "mlp", "input_shape": [6], "hidden": [5], "latent_dim": 3, "likelihood": "bernoulli"}
    g = torch.Generator().manual_seed(0)
    x, z = torch.rand(4, 6, generator=g), torch.randn(4, 3, generator=g)
    model = build_model(arch)
    logits = model.decode(z).detach().double().numpy()
    xn = x.double().numpy()
    bce = -(xn * np.log(1 / (1 + np.exp(-logits))) + (1 - xn) * np.log(1 - 1 / (1 + np.exp(-logits)))).sum(1)
    assert reconstruction_nll(model, x, z).detach().double().numpy() == pytest.approx(bce, rel=1e-5)
    model.likelihood = "gaussian"
    gauss = (0.5 * (logits - xn) ** 2 + 0.5 * math.log(2 * math.pi)).sum(1)
    assert reconstruction_nll(model, x, z).detach().double().numpy() == pytest.approx(gauss, rel=1e-5)
    mu, lv = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    kl = 0.5 * (mu.numpy() ** 2 + np.exp(lv.numpy()) - lv.numpy() - 1).mean(0)
    assert prior_kl_per_dim(mu, lv).numpy() == pytest.approx(kl, rel=1e-5)


def test_alignment_loss_is_the_raw_witness_kl_and_its_gradient_the_escape_direction():
    rng = np.random.default_rng(0)
    K, d, beta = 4, 5, 1.5
    mu = rng.normal(size=(6, d))
    p = ref.softmax(rng.normal(size=(6, K)) * 2)
    S = torch.as_tensor(ref.witness_S(K, d))
    mu_t = torch.tensor(mu, requires_grad=True)
    loss = alignment_loss(mu_t, torch.as_tensor(p), S, beta)
    q = ref.softmax(beta * mu @ ref.witness_S(K, d))
    assert float(loss.detach()) == pytest.approx(float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))), rel=1e-12)
    loss.backward()
    # docs/mathematics.md: ∂KL(p_i‖q_i)/∂μ_i = β S (q_i − p_i) (here divided by the batch size of the mean).
    assert mu_t.grad.numpy() == pytest.approx(beta * (q - p) @ ref.witness_S(K, d).T / 6, rel=1e-9, abs=1e-12)


def test_schedules_and_free_bits_follow_their_definitions():
    cfg = TrainConfig(method="x", epochs=40, kl_weight=2.0, anneal_epochs=10, cycles=4, cycle_ratio=0.5, free_bits=0.3)
    anneal, cyc = get_method("kl-anneal"), get_method("cyclical")
    assert [anneal.kl_weight(cfg, t) for t in (0, 5, 10, 30)] == [0.0, 1.0, 2.0, 2.0]
    # Fu et al.: period T/M = 10 epochs, rising over the first R = 50 % of each, then flat.
    assert [cyc.kl_weight(cfg, t) for t in (0, 2.5, 5, 9, 10, 12.5)] == [0.0, 1.0, 2.0, 2.0, 0.0, 1.0]
    kl_dim = torch.tensor([0.1, 0.5, 0.0])
    assert float(get_method("free-bits").kl_penalty(kl_dim, cfg)) == pytest.approx(0.3 + 0.5 + 0.3)
    assert float(get_method("vanilla").kl_penalty(kl_dim, cfg)) == pytest.approx(0.6)
    assert {name for name, m in METHODS.items() if m.uses_alignment} >= {"aligned", "prefit"}
    assert get_method("vanilla").align_weight(TrainConfig(align_weight=5.0), 0) == 0.0


def test_prefit_targets_are_the_analytic_code_of_the_floored_teacher():
    spec = WitnessSpec(3, 4, 2.0)
    p = torch.tensor([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]], dtype=torch.float64)
    mu_star = prefit_targets(p, spec).double()
    q = torch.softmax(2.0 * mu_star @ torch.as_tensor(witness_matrix(spec)), dim=1)
    assert q[0].numpy() == pytest.approx([0.7, 0.2, 0.1], abs=1e-6)
    assert q[1, 0] > 0.999 and torch.isfinite(mu_star).all()


# ------------------------------------------------------------------ conv architecture
CONV = {
    "name": "conv",
    "input_shape": [3, 32, 32],
    "channels": [4, 8],
    "latent_dim": 5,
    "activation": "relu",
    "likelihood": "bernoulli",
}


def test_conv_encodes_uint8_scaled_images_and_round_trips(tmp_path):
    model = build_model(CONV)
    names = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert names == {
        "encoder.0.weight": (4, 3, 4, 4),
        "encoder.0.bias": (4,),
        "encoder.1.weight": (8, 4, 4, 4),
        "encoder.1.bias": (8,),
        "encoder.2.weight": (10, 8 * 8 * 8),
        "encoder.2.bias": (10,),
        "decoder.0.weight": (8 * 8 * 8, 5),
        "decoder.0.bias": (512,),
        "decoder.1.weight": (8, 4, 4, 4),
        "decoder.1.bias": (4,),
        "decoder.2.weight": (4, 3, 4, 4),
        "decoder.2.bias": (3,),
    }
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8).float() / 255
    mu, logvar = model.encode(images)
    assert mu.shape == logvar.shape == (2, 5)
    assert model.decode(mu).shape == (2, 3, 32, 32)
    # The documented layout: conv → conv → flatten (C-order) → linear, first d outputs are μ.
    F = torch.nn.functional
    sd = model.state_dict()
    h = F.relu(F.conv2d(images, sd["encoder.0.weight"], sd["encoder.0.bias"], stride=2, padding=1))
    h = F.relu(F.conv2d(h, sd["encoder.1.weight"], sd["encoder.1.bias"], stride=2, padding=1))
    out = h.reshape(2, -1) @ sd["encoder.2.weight"].T + sd["encoder.2.bias"]
    assert torch.allclose(mu, out[:, :5], atol=1e-6)
    path = tmp_path / "conv.safetensors"
    save_checkpoint(path, model, CONV, {"num_classes": 3, "beta": 2.0, "offset": 0})
    again = load_checkpoint(path)
    assert again.architecture == CONV
    assert torch.equal(again.model.encode(images)[0], mu.detach())
    assert set(load_file(str(path))) == set(names)


def test_conv_rejects_sizes_the_strides_cannot_halve(tmp_path, capsys):
    from auditor.errors import AuditInputError

    with pytest.raises(AuditInputError, match="divisible by 4"):
        build_model({**CONV, "input_shape": [3, 30, 30]})
    with pytest.raises(AuditInputError, match=r"\[C, H, W\]"):
        build_model({**CONV, "input_shape": [64]})


def test_train_conv_on_a_cifar10_binary_folder_and_certify(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10_binary(folder, np.random.default_rng(0), train_counts=(4, 4, 4, 4, 4), test_count=6)
    train = open_dataset(str(folder), "train")
    assert train.sample_shape == (3, 32, 32) and train.dtype == np.uint8
    teacher = tmp_path / "t.pt"
    save_teacher(
        fit_pca_gmm(train.read(0, train.num_samples).reshape(20, -1) / 255.0, rank=4, num_classes=3, seed=0), teacher
    )
    out = tmp_path / "conv.safetensors"
    code, _, err = run(
        [
            "train",
            "--method",
            "aligned",
            "--data",
            folder,
            "--teacher",
            teacher,
            "--out",
            out,
            "--arch",
            "conv",
            "--channels",
            "4,8",
            "--latent-dim",
            "4",
            "--epochs",
            "1",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    ckpt = load_checkpoint(out)
    assert ckpt.architecture == {
        "name": "conv",
        "input_shape": [3, 32, 32],
        "channels": [4, 8],
        "latent_dim": 4,
        "activation": "relu",
        "likelihood": "bernoulli",
    }
    assert ckpt.training["data"]["num_samples"] == 20
    code, _, err = run(
        [
            "certify",
            "--model",
            out,
            "--teacher",
            teacher,
            "--data",
            folder,
            "--split",
            "test",
            "--out",
            tmp_path / "rep",
            "--quiet",
        ],
        capsys,
    )
    assert code in (0, 1), err
    assert json.loads((tmp_path / "rep" / "certificate.json").read_text())["num_samples"] == 6


# ------------------------------------------------------------------ bad input
def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(aligned, teacher, tmp_path, capsys):
    small = tmp_path / "small.npz"
    np.savez(small, x=np.random.default_rng(0).uniform(0, 1, (5, 64)).astype(np.float32))
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.random.default_rng(0).uniform(0, 1, (30, 32)).astype(np.float32))
    k3 = tmp_path / "k3.pt"
    save_teacher(fit_pca_gmm(open_dataset("digits", "train").read(0, 200), rank=5, num_classes=3, seed=0), k3)
    wide_teacher = tmp_path / "wide.pt"
    save_teacher(fit_pca_gmm(np.load(wide)["x"], rank=3, num_classes=3, seed=0), wide_teacher)
    out = tmp_path / "never.safetensors"
    cases = {
        "init input size": (
            ["--method", "aligned", "--init", aligned, "--data", wide, "--split", "all", "--teacher", wide_teacher],
            "takes inputs of shape [64]",
        ),
        "unknown method": (["--method", "nope"], "unknown method 'nope'"),
        "K > samples": (["--method", "aligned", "--data", small, "--split", "all"], "only 5 samples"),
        "teacher input size": (
            ["--method", "aligned", "--data", wide, "--split", "all"],
            "teacher takes inputs of size 64",
        ),
        "teacher K vs init witness": (["--method", "aligned", "--init", aligned, "--teacher", k3], "K=10"),
        "init architecture": (["--method", "aligned", "--init", aligned, "--latent-dim", "12"], "must match"),
        "init hidden": (["--method", "aligned", "--init", aligned, "--hidden", "64"], "must match"),
        "protocol without init": (["--protocol", "collapse"], "give --init"),
        "protocol method mismatch": (
            ["--protocol", "collapse", "--method", "aligned", "--init", aligned],
            "does not use",
        ),
        "unknown protocol": (["--protocol", "melt", "--init", aligned], "unknown protocol"),
        "no method": ([], "give --method"),
        "zero epochs": (["--method", "aligned", "--epochs", "0"], "--epochs must be a positive"),
        "negative lr": (["--method", "aligned", "--lr", "-1"], "--lr must be"),
        "zero batch": (["--method", "aligned", "--batch-size", "0"], "--batch-size must be"),
        "latent too small": (["--method", "aligned", "--latent-dim", "4"], "too small for K=10"),
        "bad hidden": (["--method", "aligned", "--hidden", "12,x"], "--hidden must be"),
        "cycle ratio": (["--method", "cyclical", "--cycle-ratio", "0"], "--cycle-ratio"),
        "out suffix": (["--method", "aligned", "--out", tmp_path / "x.pt"], ".safetensors"),
        "missing init": (["--method", "aligned", "--init", tmp_path / "nope.safetensors"], "no such model file"),
        "bad likelihood": (["--method", "aligned", "--likelihood", "poisson"], "--likelihood"),
        "unknown arch": (["--method", "aligned", "--arch", "transformer"], "unknown --arch 'transformer'"),
        "align weight ignored": (["--method", "lidvae", "--align-weight", "5"], "choose an aligned method (aligned,"),
    }
    for name, (extra, message) in cases.items():
        args = ["train", "--data", "digits", "--teacher", teacher, "--out", out, "--quiet", "--epochs", "1"]
        for flag_at in range(0, len(extra), 2):
            flag = extra[flag_at]
            if flag in args:  # override a default flag
                args[args.index(flag) + 1] = extra[flag_at + 1]
            else:
                args += extra[flag_at : flag_at + 2]
        code, stdout, err = run(args, capsys)
        assert code == 2, (name, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (name, err)
        assert not out.exists() and not out.with_suffix(".csv").exists(), name


def test_without_a_terminal_there_is_no_progress_bar_only_the_summary(teacher, tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    args = [a for a in train_args(teacher, out, "--method", "vanilla", "--epochs", "1") if a != "--quiet"]
    code, stdout, err = run(args, capsys)
    assert code == 0 and err == ""
    assert (
        stdout.startswith(f"wrote {out} and {out.with_suffix('.csv')}: 1 epochs (vanilla") and stdout.count("\n") == 1
    )
