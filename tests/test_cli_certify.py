"""`audit certify` end to end: numbers against plain numpy, exit codes, and every bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy

from auditor.cli.app import main

from . import reference as ref
from .certify_fixtures import (
    BETA,
    LATENT,
    K,
    data_x,
    mlp_tensors,
    numpy_encoder_mu,
    teacher_arrays,
    write_model,
    write_teacher,
)


def run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture
def files(tmp_path):
    x = data_x()
    np.save(tmp_path / "x.npy", x)
    tensors = mlp_tensors()
    return {
        "dir": tmp_path,
        "x": x,
        "tensors": tensors,
        "model": write_model(tmp_path / "vae.safetensors", tensors),
        "teacher": write_teacher(tmp_path / "teacher.pt"),
        "data": tmp_path / "x.npy",
        "out": tmp_path / "report",
    }


def certify_args(files, *extra):
    return [
        "certify",
        "--model",
        files["model"],
        "--teacher",
        files["teacher"],
        "--data",
        files["data"],
        "--out",
        files["out"],
        "--quiet",
        *extra,
    ]


def test_certificate_numbers_match_numpy_on_the_documented_formulas(files, capsys):
    code, out, err = run(certify_args(files), capsys)
    assert code in (0, 1) and err == "" and out == ""
    cert = json.loads((files["out"] / "certificate.json").read_text())

    mu, logvar = numpy_encoder_mu(files["tensors"], files["x"].astype(np.float64))
    p = ref.pca_gmm_probs(files["x"].astype(np.float64), teacher_arrays())
    expected = ref.certificate(mu, p, K, BETA)
    # μ comes from a float32 forward pass; everything after it is float64 on both sides.
    for key in ("margin", "teacher_information", "alignment_loss", "margin_lcb"):
        assert cert[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    assert cert["teacher_information"] == pytest.approx(expected["teacher_information"], rel=1e-10)
    diag = ref.diagnostics(mu, logvar)
    assert cert["diagnostics"]["mean_sq_norm"] == pytest.approx(diag["mean_sq_norm"], rel=1e-5)
    assert cert["diagnostics"]["mean_prior_kl"] == pytest.approx(diag["mean_prior_kl"], rel=1e-5)
    assert cert["diagnostics"]["active_units"] == diag["active_units"]
    assert cert["verdict"] == ("certified" if expected["margin_lcb"] >= 0 else "not_certified")
    assert code == (0 if cert["verdict"] == "certified" else 1)
    assert cert["schema"] == "vae-audit-certificate/1"
    assert cert["num_samples"] == 60 and cert["num_classes"] == K
    assert cert["witness"] == {
        "num_classes": K,
        "beta": BETA,
        "offset": 0,
        "latent_dim": LATENT,
        "source": f"metadata of {files['model']}",
    }
    assert cert["view_gap"] is None and "teacher saw the encoder's own inputs" in cert["view_gap_reason"]
    import hashlib

    hashes = {i["role"]: i["sha256"] for i in cert["inputs"]}
    for role in ("model", "teacher", "data"):
        path = files[role]
        assert hashes[role] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert cert["command"][:2] == ["audit", "certify"]
    assert 'not certified" does not mean "collapsed"' in (files["out"] / "certificate.md").read_text().lower()


def test_precomputed_latents_and_probabilities_match_numpy_to_rounding(tmp_path, capsys):
    rng = np.random.default_rng(5)
    mu = rng.normal(size=(80, 5))
    p = ref.softmax(2 * rng.normal(size=(80, 4)))
    save_numpy({"mu": mu, "logvar": rng.normal(scale=0.1, size=(80, 5))}, str(tmp_path / "lat.safetensors"))
    np.savez(tmp_path / "probs.npz", probs=p)
    code, _, _ = run(
        [
            "certify",
            "--latents",
            tmp_path / "lat.safetensors",
            "--teacher-probs",
            tmp_path / "probs.npz",
            "--beta",
            1.5,
            "--out",
            tmp_path / "r",
            "--quiet",
            "--batch-size",
            7,
        ],
        capsys,
    )
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    expected = ref.certificate(mu, p, 4, 1.5)
    for key in ("margin", "teacher_information", "alignment_loss", "margin_lcb"):
        assert cert[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-13), key
    assert code == (0 if expected["margin_lcb"] >= 0 else 1)


def test_same_inputs_give_the_same_numbers(files, capsys):
    run(certify_args(files), capsys)
    first = json.loads((files["out"] / "certificate.json").read_text())
    run(certify_args(files, "--batch-size", 512), capsys)
    second = json.loads((files["out"] / "certificate.json").read_text())
    assert second.pop("command") != first.pop("command")
    second["settings"].pop("batch_size"), first["settings"].pop("batch_size")
    assert second == first


def test_constant_encoder_is_not_certified_and_flagged_constant(files, capsys):
    write_model(files["model"], mlp_tensors(zero_mu=True))
    code, _, _ = run(certify_args(files, "--confidence", 0), capsys)
    cert = json.loads((files["out"] / "certificate.json").read_text())
    assert code == 1 and cert["verdict"] == "not_certified"
    assert cert["diagnostics"]["exactly_constant"] and cert["margin"] <= 1e-12


def test_certified_model_exits_zero_and_reports_both_views(tmp_path, capsys):
    # Latents at the analytic code of the teacher's own probabilities: margin = I_T > 0.
    from auditor.certificate.witness import WitnessSpec, analytic_code

    rng = np.random.default_rng(3)
    p = ref.softmax(3 * rng.normal(size=(300, 3)))
    p_view = ref.softmax(np.log(p) + 0.2 * rng.normal(size=p.shape))
    mu = analytic_code(p, WitnessSpec(3, 2, 2.0))
    np.save(tmp_path / "mu.npy", mu)
    save_numpy({"probs": p}, str(tmp_path / "p.safetensors"))
    save_numpy({"probs": p_view}, str(tmp_path / "pv.safetensors"))
    code, _, _ = run(
        [
            "certify",
            "--latents",
            tmp_path / "mu.npy",
            "--teacher-probs",
            tmp_path / "p.safetensors",
            "--view-probs",
            tmp_path / "pv.safetensors",
            "--beta",
            2,
            "--out",
            tmp_path / "r",
            "--quiet",
        ],
        capsys,
    )
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    assert code == 0 and cert["verdict"] == "certified"
    expected = ref.view_gap(mu, p, p_view, 3, 2.0)
    for key in ("bound", "margin_encoder_view", "mean_kl", "mean_tv"):
        assert cert["view_gap"][key] == pytest.approx(expected[key], rel=1e-10), key
    assert abs(cert["view_gap"]["margin_encoder_view"] - cert["margin"]) <= cert["view_gap"]["bound"]


def test_teacher_data_gives_the_view_gap_from_two_views(files, tmp_path, capsys):
    x_teacher = np.clip(files["x"] + 0.05, 0, 1)
    np.save(tmp_path / "xt.npy", x_teacher)
    run(certify_args(files, "--teacher-data", tmp_path / "xt.npy"), capsys)
    cert = json.loads((files["out"] / "certificate.json").read_text())
    mu, _ = numpy_encoder_mu(files["tensors"], files["x"].astype(np.float64))
    p = ref.pca_gmm_probs(x_teacher.astype(np.float64), teacher_arrays())
    p_view = ref.pca_gmm_probs(files["x"].astype(np.float64), teacher_arrays())
    expected = ref.view_gap(mu, p, p_view, K, BETA)
    assert cert["teacher_information"] == pytest.approx(
        ref.certificate(mu, p, K, BETA)["teacher_information"], rel=1e-10
    )
    for key in ("bound", "mean_kl", "mean_tv"):
        assert cert["view_gap"][key] == pytest.approx(expected[key], rel=1e-5), key
    assert {i["role"] for i in cert["inputs"]} >= {"teacher-data", "data"}


def test_uint8_inputs_are_scaled_to_unit_interval(files, tmp_path, capsys):
    x8 = (files["x"] * 255).round().astype(np.uint8)
    np.save(tmp_path / "x8.npy", x8)
    np.save(tmp_path / "xf.npy", x8.astype(np.float32) / 255)
    run(certify_args(files, "--data", tmp_path / "x8.npy", "--out", tmp_path / "a"), capsys)
    run(certify_args(files, "--data", tmp_path / "xf.npy", "--out", tmp_path / "b"), capsys)
    a = json.loads((tmp_path / "a" / "certificate.json").read_text())
    b = json.loads((tmp_path / "b" / "certificate.json").read_text())
    assert a["margin"] == b["margin"] and a["alignment_loss"] == b["alignment_loss"]


def test_arch_factory_with_weights_and_trusted_pt2_teacher(files, tmp_path, capsys, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "class Enc(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.lin = torch.nn.Linear(64, 4)\n"
        "    def encode(self, x):\n"
        "        return self.lin(x)\n"
        "def build():\n"
        "    return Enc()\n"
    )
    g = torch.Generator().manual_seed(0)
    weights = {"lin.weight": torch.randn(4, 64, generator=g), "lin.bias": torch.zeros(4)}
    from safetensors.torch import save_file

    save_file(weights, str(tmp_path / "enc.safetensors"))
    teacher_module = torch.nn.Sequential(torch.nn.Linear(64, 3))
    program = torch.export.export(
        teacher_module, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(tmp_path / "teacher.pt2"))
    monkeypatch.chdir(tmp_path)
    base = [
        "certify",
        "--arch",
        "my_models:build",
        "--model",
        tmp_path / "enc.safetensors",
        "--teacher",
        tmp_path / "teacher.pt2",
        "--data",
        files["data"],
        "--beta",
        1.0,
        "--out",
        tmp_path / "r",
        "--quiet",
    ]
    code, _, err = run(base, capsys)
    assert code == 2 and "--trust-teacher-code" in err and not (tmp_path / "r").exists()
    code, _, err = run(base + ["--trust-teacher-code"], capsys)
    assert code in (0, 1), err
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    x = files["x"].astype(np.float64)
    mu = x @ weights["lin.weight"].numpy().T.astype(np.float64)
    with torch.no_grad():
        p = torch.softmax(teacher_module(torch.from_numpy(files["x"])).double(), 1).numpy()
    assert cert["margin"] == pytest.approx(ref.certificate(mu, p, 3, 1.0)["margin"], rel=1e-5)
    assert cert["witness"]["source"] == "command-line flags"


def test_python_dash_m_auditor_works_like_audit(files):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditor",
            "certify",
            "--model",
            str(files["model"]),
            "--teacher",
            str(files["teacher"]),
            "--data",
            str(files["data"]),
            "--out",
            str(files["out"]),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode in (0, 1), result.stderr
    assert (files["out"] / "certificate.json").exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditor",
            "certify",
            "--model",
            "missing.safetensors",
            "--teacher",
            str(files["teacher"]),
            "--data",
            "digits",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_format_and_quiet(files, capsys):
    code, out, _ = run(certify_args(files, "--format", "json"), capsys)
    assert out == "" and (files["out"] / "certificate.json").exists() and not (files["out"] / "certificate.md").exists()
    code, out, _ = run([a for a in certify_args(files) if a != "--quiet"], capsys)
    assert "verdict" in out and "certificate.json" in out


# ----------------------------------------------------------------------------- bad input → exit 2


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/vae-audit-evil-marker")


def _bad_cases(files, tmp_path):
    d = tmp_path
    np.save(d / "nan.npy", np.where(np.arange(60 * 64).reshape(60, 64) == 100, np.nan, files["x"]).astype(np.float32))
    np.save(d / "empty.npy", np.zeros((0, 64), np.float32))
    np.save(d / "x32.npy", np.zeros((10, 32), np.float32))
    rng = np.random.default_rng(0)
    save_numpy({"probs": -ref.softmax(rng.normal(size=(60, 3)))}, str(d / "neg.safetensors"))
    save_numpy({"probs": 0.5 * ref.softmax(rng.normal(size=(60, 3)))}, str(d / "unnorm.safetensors"))
    save_numpy({"probs": ref.softmax(rng.normal(size=(59, 3)))}, str(d / "short.safetensors"))
    save_numpy(
        {"mu": np.where(np.arange(60 * 4).reshape(60, 4) == 5, np.inf, rng.normal(size=(60, 4)))},
        str(d / "nanmu.safetensors"),
    )
    save_numpy({"mu": rng.normal(size=(60, 4))}, str(d / "mu.safetensors"))
    with open(d / "evil.pt", "wb") as handle:
        pickle.dump({"format": Evil()}, handle)
    write_teacher(d / "t5.pt", teacher_arrays(k=5))
    write_teacher(d / "t32.pt", teacher_arrays(d=32))
    write_teacher(d / "badfmt.pt", format="something-else")
    write_model(d / "nometa.safetensors", metadata={})
    write_model(d / "unknown_arch.safetensors", arch={"name": "transformer9000", "input_shape": [64], "latent_dim": 4})
    write_model(d / "small_d.safetensors", witness={"num_classes": 6, "beta": 2.0, "offset": 0})
    write_model(d / "mismatch.safetensors", tensors={k: v for k, v in mlp_tensors().items() if k != "decoder.1.bias"})
    (d / "trunc.safetensors").write_bytes(files["model"].read_bytes()[:300])
    (d / "trunc.pt").write_bytes(files["teacher"].read_bytes()[:200])
    (d / "trunc.npy").write_bytes((d / "x32.npy").read_bytes()[:200])
    m, t, x = files["model"], files["teacher"], files["data"]
    return {
        "missing model": (["--model", d / "nope.safetensors", "--teacher", t, "--data", x], "no such model file"),
        "truncated model": (["--model", d / "trunc.safetensors", "--teacher", t, "--data", x], "truncated"),
        "no vae_audit metadata": (
            ["--model", d / "nometa.safetensors", "--teacher", t, "--data", x],
            "no vae_audit metadata",
        ),
        "unknown architecture": (
            ["--model", d / "unknown_arch.safetensors", "--teacher", t, "--data", x],
            "unknown architecture",
        ),
        "tensors do not match": (
            ["--model", d / "mismatch.safetensors", "--teacher", t, "--data", x],
            "do not match the architecture",
        ),
        "d < K-1": (["--model", d / "small_d.safetensors", "--teacher", t, "--data", x], "too small"),
        "teacher K mismatch": (
            ["--model", m, "--teacher", d / "t5.pt", "--data", x],
            "K=3 classes but the teacher gives K=5",
        ),
        "teacher input mismatch": (
            ["--model", m, "--teacher", d / "t32.pt", "--data", x],
            "teacher takes inputs of size 32",
        ),
        "data shape mismatch": (
            ["--model", m, "--teacher", t, "--data", d / "x32.npy"],
            "the model takes inputs of shape",
        ),
        "pickle teacher refused": (["--model", m, "--teacher", d / "evil.pt", "--data", x], "refused to load"),
        "truncated teacher": (["--model", m, "--teacher", d / "trunc.pt", "--data", x], "truncated or corrupt"),
        "teacher wrong format": (["--model", m, "--teacher", d / "badfmt.pt", "--data", x], "not a vae-audit teacher"),
        "NaN in data": (["--model", m, "--teacher", t, "--data", d / "nan.npy"], "NaN or inf"),
        "empty data": (["--model", m, "--teacher", t, "--data", d / "empty.npy"], "empty"),
        "truncated data": (["--model", m, "--teacher", t, "--data", d / "trunc.npy"], "truncated"),
        "unknown data": (["--model", m, "--teacher", t, "--data", "nonexistent-set"], "digits"),
        "negative probs": (
            ["--latents", d / "mu.safetensors", "--teacher-probs", d / "neg.safetensors", "--beta", 1],
            "not probability vectors",
        ),
        "probs not summing to 1": (
            ["--latents", d / "mu.safetensors", "--teacher-probs", d / "unnorm.safetensors", "--beta", 1],
            "not probability vectors",
        ),
        "NaN in latents": (
            ["--latents", d / "nanmu.safetensors", "--teacher-probs", d / "neg.safetensors", "--beta", 1],
            "NaN or inf",
        ),
        "sample count mismatch": (
            ["--latents", d / "mu.safetensors", "--teacher-probs", d / "short.safetensors", "--beta", 1],
            "same number of samples",
        ),
        "latents without beta": (
            ["--latents", d / "mu.safetensors", "--teacher-probs", d / "short.safetensors"],
            "--beta",
        ),
        "flag contradicts metadata": (
            ["--model", m, "--teacher", t, "--data", x, "--beta", 3],
            "contradicts the witness",
        ),
        "two encoder sources": (
            ["--model", m, "--latents", d / "mu.safetensors", "--teacher", t, "--data", x],
            "exactly one of",
        ),
        "no teacher": (["--model", m, "--data", x], "exactly one of --teacher"),
        "model without data": (["--model", m, "--teacher", t], "give --data"),
        "unknown format": (["--model", m, "--teacher", t, "--data", x, "--format", "json,pdf"], "unknown --format"),
        "unknown device": (["--model", m, "--teacher", t, "--data", x, "--device", "tpu"], "unknown --device"),
        "bad confidence": (["--model", m, "--teacher", t, "--data", x, "--confidence", 1.5], "--confidence"),
        "bad batch size": (["--model", m, "--teacher", t, "--data", x, "--batch-size", 0], "--batch-size"),
        "bad limit": (["--model", m, "--teacher", t, "--data", x, "--limit", 0], "--limit"),
        "bad split": (["--model", m, "--teacher", t, "--data", "digits", "--split", "validation"], "split"),
        "arch not importable": (
            ["--arch", "no_such_module_xyz:f", "--teacher", t, "--data", x, "--beta", 1],
            "cannot import",
        ),
        "unknown option": (["--model", m, "--teacher", t, "--data", x, "--bogus"], "No such option"),
        "bad option value": (["--model", m, "--teacher", t, "--data", x, "--confidence", "high"], "confidence"),
    }


def test_every_bad_input_is_one_line_exit_2_and_leaves_the_old_report(files, tmp_path, capsys):
    MARKER.unlink(missing_ok=True)
    out = tmp_path / "kept"
    out.mkdir()
    (out / "certificate.json").write_text("previous report\n")
    failures = []
    for name, (args, message) in _bad_cases(files, tmp_path).items():
        code, stdout, err = run(["certify", *args, "--out", out, "--quiet"], capsys)
        lines = err.strip().splitlines()
        if not (
            code == 2
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and message in lines[0]
            and "Traceback" not in err
        ):
            failures.append(f"{name}: code={code} err={err!r}")
    assert not failures, "\n".join(failures)
    assert (out / "certificate.json").read_text() == "previous report\n"
    assert sorted(p.name for p in out.iterdir()) == ["certificate.json"]
    assert not MARKER.exists(), "the pickled payload ran"


def test_limit_applies_to_every_input(tmp_path, capsys):
    rng = np.random.default_rng(9)
    mu, p = rng.normal(size=(80, 3)), ref.softmax(rng.normal(size=(80, 3)))
    np.save(tmp_path / "mu.npy", mu)
    np.savez(tmp_path / "p.npz", probs=p)
    np.save(tmp_path / "x.npy", np.zeros((80, 2), np.float32))
    code, _, err = run(
        [
            "certify",
            "--latents",
            tmp_path / "mu.npy",
            "--teacher-probs",
            tmp_path / "p.npz",
            "--beta",
            1,
            "--data",
            tmp_path / "x.npy",
            "--limit",
            30,
            "--out",
            tmp_path / "r",
            "--quiet",
        ],
        capsys,
    )
    assert code in (0, 1), err
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    assert cert["num_samples"] == 30
    assert cert["margin"] == pytest.approx(ref.certificate(mu[:30], p[:30], 3, 1.0)["margin"], rel=1e-12)


def test_interrupt_leaves_no_report(files, capsys, monkeypatch):
    from auditor.certificate.state import CertificateState

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(CertificateState, "update", interrupted)
    code, _, err = run(certify_args(files), capsys)
    assert code == 130 and err.strip() == "error: interrupted"
    assert not files["out"].exists()


def test_reports_are_readable_by_others_like_any_new_file(files, capsys):
    run(certify_args(files), capsys)
    umask = os.umask(0)
    os.umask(umask)
    mode = (files["out"] / "certificate.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask


def test_model_diagnostics_can_be_turned_off_without_changing_the_certificate(files, capsys):
    run(certify_args(files), capsys)
    with_diag = json.loads((files["out"] / "certificate.json").read_text())
    run(certify_args(files, "--no-model-diagnostics"), capsys)
    without = json.loads((files["out"] / "certificate.json").read_text())
    assert with_diag["diagnostics"]["model"]["mutual_information"]["computed"] is True
    assert without["diagnostics"]["model"] == {"computed": False, "reason": "turned off (--no-model-diagnostics)"}
    for key in ("margin", "margin_lcb", "teacher_information", "alignment_loss", "verdict"):
        assert without[key] == with_diag[key]
    report = (files["out"] / "certificate.md").read_text()
    assert "| mutual information I_q(x; z) (nats) | not computed: turned off (--no-model-diagnostics) |" in report
