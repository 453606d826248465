"""The training examples: the scripts in examples/ run as a user runs them and what they train is
certified, and the snippets in README.md and docs/training.md run as written.

The flow of docs/training.md: ``audit design --witness-out`` chooses the witness, the example trains
against it (briefly: a few epochs on the built-in digits), and ``audit certify --arch
<example>:factory --witness`` from examples/ certifies the weights it saved (exit 0).
"""

from __future__ import annotations

import contextlib
import json
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

from auditor.sources.witness_file import WitnessSettings, save_witness

from .cli_run import run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TEACHER = ROOT / "models" / "digits" / "teacher.pt"


@pytest.fixture(scope="module")
def witness(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("design") / "witness.json"
    argv = ["design", "--teacher", TEACHER, "--data", "digits", "--split", "train", "--beta", "2", "--latent-dim", "16"]
    with pytest.raises(SystemExit) as exit_info:
        from auditor.cli.app import main

        main([*map(str, argv), "--witness-out", str(path)])
    assert exit_info.value.code == 0
    return path


@contextlib.contextmanager
def one_thread_and_own_rng():
    """One thread (the loops are tiny, and on a busy machine a second thread spins), and the global
    RNG and thread count left as they were."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)


def run_example(script: str, witness: Path, out: Path, epochs: int, monkeypatch) -> None:
    """``python examples/<script> …``, in this process."""
    monkeypatch.syspath_prepend(str(EXAMPLES))  # what `python examples/<script>` puts first on sys.path
    argv = [script, "--teacher", str(TEACHER), "--witness", str(witness), "--out", str(out), "--epochs", str(epochs)]
    monkeypatch.setattr(sys, "argv", argv)
    with one_thread_and_own_rng():
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")


def certify_example(module: str, weights: Path, witness: Path, out: Path, capsys, monkeypatch) -> dict:
    monkeypatch.chdir(EXAMPLES)  # --arch module:factory imports from the current folder
    code, _, err = run(
        [
            "certify",
            "--arch",
            f"{module}:factory",
            "--model",
            weights,
            "--teacher",
            TEACHER,
            "--witness",
            witness,
            "--data",
            "digits",
            "--split",
            "test",
            "--out",
            out,
            "--format",
            "json,html",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["witness"]["source"] == f"witness file {witness}"
    # the factory's source file is an input too: swapping the code behind a certificate is caught
    assert [i["role"] for i in cert["inputs"]] == ["data", "model-code", "model", "teacher", "witness"]
    return cert


def test_plain_pytorch_loop(witness, tmp_path, capsys, monkeypatch):
    run_example("pytorch_loop.py", witness, tmp_path, 3, monkeypatch)
    printed = capsys.readouterr().out
    assert printed.count("margin") == 3 and f"wrote {tmp_path / 'weights.safetensors'}" in printed
    cert = certify_example(
        "pytorch_loop", tmp_path / "weights.safetensors", witness, tmp_path / "r", capsys, monkeypatch
    )
    assert cert["diagnostics"]["model"]["self_consistency"]["computed"]  # its decode(z) is used
    # The monitor's per-epoch numbers are beside the weights, and the report plots them.
    assert (tmp_path / "weights.csv").read_text().splitlines()[0].startswith("epoch,margin,")
    assert 'id="plot-training"' in (tmp_path / "r" / "certificate.html").read_text()


def test_lightning_module(witness, tmp_path, capsys, monkeypatch):
    pytest.importorskip("lightning")
    run_example("lightning_module.py", witness, tmp_path, 3, monkeypatch)
    assert "audit/margin" in capsys.readouterr().out
    certify_example("lightning_module", tmp_path / "weights.safetensors", witness, tmp_path / "r", capsys, monkeypatch)


def test_diffusers_autoencoder_kl_fine_tune(witness, tmp_path, capsys, monkeypatch):
    pytest.importorskip("diffusers")
    run_example("diffusers_finetune.py", witness, tmp_path, 2, monkeypatch)
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    assert (tmp_path / "vae" / "config.json").is_file()  # as save_pretrained writes it
    cert = certify_example("diffusers_finetune", weights, witness, tmp_path / "r", capsys, monkeypatch)
    assert cert["witness"]["latent_dim"] == 16  # 4 latent channels × 2 × 2, flattened


def python_blocks(doc: str, heading: str) -> list[str]:
    section = (ROOT / doc).read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


README = ("README.md", "## Train your own model to certify")
TRAINING = ("docs/training.md", "## Your own training loop")


def test_the_readme_example_is_the_documented_plain_loop_and_about_ten_lines():
    (readme,) = python_blocks(*README)
    assert readme == python_blocks(*TRAINING)[0]
    assert len([line for line in readme.splitlines() if line.strip()]) <= 16  # one statement a line


@pytest.mark.parametrize(
    "doc, index, needs", [(README, 0, None), (TRAINING, 1, "lightning"), (TRAINING, 2, "diffusers")]
)
def test_the_documented_examples_run_as_written(doc, index, needs, tmp_path, monkeypatch, capsys):
    if needs:
        pytest.importorskip(needs)
    code = python_blocks(*doc)[index]
    monkeypatch.chdir(tmp_path)  # where the example's witness.json is, as audit design would write it
    save_witness("witness.json", WitnessSettings(10, 2.0, 0, 16))
    with one_thread_and_own_rng():
        exec(compile(code, doc[0], "exec"), {"__name__": "documented_example"})
    printed = capsys.readouterr().out
    assert re.search(r"margin -?\d+\.\d{3}", printed), printed
