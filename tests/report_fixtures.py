"""Small audits for the report, verify and terminal tests: precomputed latents and teacher
probabilities written with plain numpy, certified in-process through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from auditor.cli.app import main

from . import reference as ref

K, D, BETA = 4, 5, 2.0


def audit_arrays(n: int = 120, seed: int = 0, aligned: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(mu, p): with ``aligned`` the means are close to the analytic code of p (certified);
    otherwise they are noise unrelated to p (not certified)."""
    rng = np.random.default_rng(seed)
    p = ref.softmax(rng.normal(size=(n, K)) * 2.0)
    if aligned:
        logp = np.log(p)
        ell = logp - logp.mean(axis=1, keepdims=True)
        mu = 0.8 * ((K - 1) / (K * BETA)) * ell @ ref.witness_S(K, D).T + rng.normal(size=(n, D)) * 0.05
    else:
        mu = rng.normal(size=(n, D)) * 2.0
    return mu, p


def write_inputs(folder: Path, aligned: bool = True, view: bool = False, n: int = 120, mu=None) -> list[str]:
    """Write lat.npz / probs.npz (/ view.npz) into ``folder``; return the certify arguments."""
    m, p = audit_arrays(n, aligned=aligned)
    mu = m if mu is None else mu
    np.savez(folder / "lat.npz", mu=mu, logvar=np.full(mu.shape, -1.0))
    np.savez(folder / "probs.npz", probs=p)
    args = ["--latents", str(folder / "lat.npz"), "--teacher-probs", str(folder / "probs.npz"), "--beta", str(BETA)]
    if view:
        np.savez(folder / "view.npz", probs=0.9 * p + 0.1 / K)
        args += ["--view-probs", str(folder / "view.npz")]
    return args


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def certify(
    folder: Path, aligned: bool = True, view: bool = False, formats: str = "json", extra=(), mu=None
) -> tuple[int, dict]:
    """Run ``audit certify`` on fresh inputs in ``folder``; return (exit code, certificate dict)."""
    args = write_inputs(folder, aligned=aligned, view=view, mu=mu)
    out = folder / "report"
    code = run_cli(["certify", *args, "--out", str(out), "--format", formats, "--quiet", *extra])
    return code, json.loads((out / "certificate.json").read_text())


def write_certificate(path: Path, cert: dict) -> Path:
    path.write_text(json.dumps(cert, indent=2))
    return path
