"""`audit train` on the hardware: device and precision choices, the bf16 forward with the loss terms
and monitor at full precision, and data-parallel training under torchrun (2 gloo processes on a
CPU) whose monitor equals a single process's numbers.

No test here runs on a GPU (none is available to the suite); the CUDA-only code (pinned, non-blocking
copies, the CUDA noise generator, nccl) is the audit's, exercised by tests/test_extract.py."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.audit.distributed import Ranks
from auditor.certificate.witness import WitnessSpec, witness_matrix
from auditor.sources.arrays import InMemoryArray
from auditor.sources.checkpoint import load_checkpoint
from auditor.training.config import TrainConfig, resolve_config
from auditor.training.losses import AlignmentLoss
from auditor.training.methods.registry import get_method
from auditor.training.trainer import _batch_losses, _Run, fresh_model

from .cli_run import run, run_in_processes
from .method_fixtures import save_digits_teacher


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return save_digits_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_device_and_precision_mistakes_are_one_line_exit_2(teacher, tmp_path, capsys):
    out = tmp_path / "never.safetensors"
    base = ["train", "--method", "aligned", "--data", "digits", "--teacher", teacher, "--out", out, "--quiet"]
    cases = [
        (["--device", "gpu"], "unknown --device 'gpu'"),
        (["--precision", "fp16"], "unknown --precision 'fp16' for training (use fp32, bf16)"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "--device cuda was asked for, but no CUDA device is available"))
    for extra, message in cases:
        code, _, err = run([*base, *extra], capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (extra, err)
        assert not out.exists()


def test_auto_resolves_to_the_device_that_runs_and_is_recorded(teacher, tmp_path, capsys):
    out = tmp_path / "auto.safetensors"
    args = ["train", "--method", "vanilla", "--data", "digits", "--epochs", "1", "--quiet"]
    args += ["--teacher", teacher, "--out", out]
    code, _, err = run(args, capsys)
    assert code == 0, err
    training = load_checkpoint(out).training
    assert training["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert training["precision"] == "fp32" and training["world_size"] == 1


def test_bf16_runs_the_forward_in_bf16_and_the_losses_in_float32():
    cfg = resolve_config(TrainConfig(method="aligned", device="cpu", precision="bf16", latent_dim=4), None)
    arch = cfg.architecture((12,))
    spec = WitnessSpec(3, 4, 2.0)
    g = torch.Generator().manual_seed(0)
    x, p = torch.rand(8, 12, generator=g), torch.softmax(torch.randn(8, 3, generator=g), dim=1)
    model = fresh_model(arch, 0)
    align = AlignmentLoss(3, 4, 2.0)
    sources = {"x": InMemoryArray(x.numpy())}
    seen = []
    model.encoder[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    generator = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")
    run_ = _Run(cfg, get_method("aligned"), model, None, spec, align, sources, cpu, Ranks(), generator, generator)
    loss, terms, _ = _batch_losses(run_, "elbo", {"x": x, "p": p.float()}, 8, slice(0, 8), 0.0)
    assert seen == [torch.bfloat16]  # the encoder ran under autocast
    assert all(term.dtype == torch.float32 for term in terms.values()) and loss.dtype == torch.float32
    # The alignment term is the raw witness KL of the (bf16-computed) means, evaluated in float32.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mu = model.encode(x)[0].float().double().numpy()
    q = torch.softmax(torch.as_tensor(2.0 * mu @ witness_matrix(spec)), dim=1).numpy()
    pn = p.double().numpy()
    expected = float(np.mean(np.sum(pn * (np.log(pn) - np.log(q)), axis=1)))
    assert float(terms["align"]) == pytest.approx(expected, rel=1e-5)


def test_bf16_training_monitors_at_full_precision(teacher, tmp_path, capsys):
    out = tmp_path / "bf16.safetensors"
    args = ["train", "--method", "aligned", "--data", "digits", "--teacher", teacher, "--out", out, "--quiet"]
    code, _, err = run([*args, "--epochs", "2", "--device", "cpu", "--precision", "bf16"], capsys)
    assert code == 0, err
    assert load_checkpoint(out).training["precision"] == "bf16"
    # The CSV's margin is the fp32 audit of the checkpoint on the training split.
    code, _, err = run(
        ["certify", "--model", out, "--teacher", teacher, "--data", "digits", "--split", "train"]
        + ["--out", tmp_path / "cert", "--quiet", "--device", "cpu"],
        capsys,
    )
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    assert float(read_csv(out.with_suffix(".csv"))[-1]["margin"]) == pytest.approx(cert["margin"], rel=1e-9)


# ------------------------------------------------------------------ torchrun
def test_two_gloo_processes_train_the_single_process_run(teacher, tmp_path):
    common = ["train", "--method", "aligned", "--data", "digits", "--teacher", teacher, "--epochs", "3"]
    common += ["--batch-size", "100", "--device", "cpu", "--quiet"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    single = run_in_processes([*common, "--out", one])
    double = run_in_processes([*common, "--out", two], nproc=2)
    assert single.returncode == 0, single.stderr
    assert double.returncode == 0, double.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv", "one.safetensors", "two.csv", "two.safetensors"]
    assert load_checkpoint(two).training["world_size"] == 2
    rows_one, rows_two = read_csv(one.with_suffix(".csv")), read_csv(two.with_suffix(".csv"))
    assert len(rows_one) == len(rows_two) == 4
    numeric = [k for k in rows_one[0] if k not in ("phase", "certified")]
    # Epoch 0 (the same weights, before any step): the combined monitor is the single process's,
    # to float64 rounding.
    for key in numeric:
        a, b = float(rows_one[0][key]), float(rows_two[0][key])
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), key
    # Later epochs: the same optimisation, its gradients summed in another order. float32 sums
    # that differ in their last bits (~1e-7 relative) move three epochs of Adam steps by far
    # less than 1e-5; a sharding error (a rank's rows counted twice or not at all, a wrong
    # weight) moves the numbers by percent.
    for row_one, row_two in zip(rows_one[1:], rows_two[1:]):
        assert row_one["certified"] == row_two["certified"]
        for key in numeric:
            assert math.isclose(float(row_one[key]), float(row_two[key]), rel_tol=1e-5, abs_tol=1e-7), key
    # The combined monitor of the last epoch is the single-process audit of rank 0's checkpoint.
    audit = run_in_processes(
        ["certify", "--model", two, "--teacher", teacher, "--data", "digits", "--split", "train"]
        + ["--device", "cpu", "--out", tmp_path / "cert", "--quiet"]
    )
    assert audit.returncode in (0, 1), audit.stderr
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    assert float(rows_two[-1]["margin"]) == pytest.approx(cert["margin"], rel=1e-9)
    assert float(rows_two[-1]["margin_lcb"]) == pytest.approx(cert["margin_lcb"], rel=1e-9)


# ------------------------------------------------------------------ CUDA (run by benchmarks/gpu_check.sh on a GPU)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_monitors_what_certify_finds_and_resumes(precision, teacher, tmp_path, capsys):
    from auditor.training.resume import resume_path
    from auditor.training.run import train_to_file

    out = tmp_path / "cuda.safetensors"
    cfg = TrainConfig(method="aligned", epochs=3, device="cuda", precision=precision)

    def stop(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_to_file(cfg, "digits", "train", teacher, out, on_epoch=stop)
    assert resume_path(out).is_file()
    train_to_file(cfg, "digits", "train", teacher, out, resume=True)
    assert not resume_path(out).exists() and load_checkpoint(out).training["device"] == "cuda"
    code, _, err = run(
        ["certify", "--model", out, "--teacher", teacher, "--data", "digits", "--split", "train"]
        + ["--out", tmp_path / "cert", "--quiet", "--device", "cuda"],
        capsys,
    )
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    # float32 encoders at other batch sizes round differently on a GPU: agreement to float32 scale
    assert float(read_csv(out.with_suffix(".csv"))[-1]["margin"]) == pytest.approx(cert["margin"], rel=1e-4, abs=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_train_the_single_gpu_run(teacher, tmp_path):
    common = ["train", "--method", "aligned", "--data", "digits", "--teacher", teacher, "--epochs", "2"]
    common += ["--batch-size", "100", "--device", "cuda", "--quiet"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    assert run_in_processes([*common, "--out", one]).returncode == 0
    double = run_in_processes([*common, "--out", two], nproc=2)
    assert double.returncode == 0, double.stderr
    rows_one, rows_two = read_csv(one.with_suffix(".csv")), read_csv(two.with_suffix(".csv"))
    for row_one, row_two in zip(rows_one, rows_two):
        assert math.isclose(float(row_one["margin"]), float(row_two["margin"]), rel_tol=1e-3, abs_tol=1e-4)
