"""Audit inputs for models from other libraries, and the checks every such test repeats: the
certificate a one-command `audit certify` writes equals plain numpy's from the library's own μ,
and a refusal is one `error:` line with exit code 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from . import reference as ref
from .cli_run import run

K, BETA = 3, 2.0


def write_audit_inputs(folder: Path, x: np.ndarray, seed: int = 0) -> list[str]:
    """x.npy and random teacher probabilities probs.npz; the certify arguments that read them."""
    rng = np.random.default_rng(seed)
    np.save(folder / "x.npy", x.astype(np.float32))
    np.savez(folder / "probs.npz", probs=rng.dirichlet(np.ones(K), len(x)))
    return ["--data", folder / "x.npy", "--teacher-probs", folder / "probs.npz", "--beta", BETA]


def certify(args: list, capsys, out: Path) -> dict:
    code, _, err = run(["certify", *args, "--out", out, "--quiet"], capsys)
    assert code in (0, 1), err
    return json.loads((out / "certificate.json").read_text())


def assert_same_certificate(cert: dict, folder: Path, mu: torch.Tensor, logvar: torch.Tensor | None = None) -> None:
    """The certificate's numbers are plain numpy's for the means the library itself computed."""
    p = np.load(folder / "probs.npz")["probs"]
    mu64 = mu.detach().double().reshape(len(mu), -1).numpy()
    expected = ref.certificate(mu64, p, K, BETA)
    for key in ("margin", "teacher_information", "alignment_loss", "margin_lcb"):
        assert cert[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    diag = ref.diagnostics(mu64, None if logvar is None else logvar.detach().double().reshape(len(mu), -1).numpy())
    for key, value in diag.items():
        assert cert["diagnostics"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def input_hashes(cert: dict) -> dict[str, tuple[str, str]]:
    """{path: (role, sha256)} of the certificate's inputs."""
    return {i["path"]: (i["role"], i["sha256"]) for i in cert["inputs"]}


def assert_refused(args: list, capsys, fragment: str) -> None:
    code, _, err = run(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0] and "Traceback" not in err, err


def run_with_module_blocked(module: str, args: list, cwd: Path) -> subprocess.CompletedProcess:
    """`audit ARGS` in a fresh interpreter in which ``import module`` fails, as when it is not installed."""
    program = (
        f"import sys; sys.modules[{module!r}] = None\n"  # a None entry makes every import of it raise ImportError
        "from auditor.cli.app import main\n"
        f"main({[str(a) for a in args]!r})\n"
    )
    return subprocess.run([sys.executable, "-c", program], cwd=cwd, capture_output=True, text=True, timeout=300)
