"""Run the `audit` CLI in-process and capture (exit code, stdout, stderr)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.cli.app import main


def run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


REPO = Path(__file__).resolve().parents[1]


def run_in_processes(args, nproc: int | None = None, cwd=REPO) -> subprocess.CompletedProcess:
    """`audit ARGS` in a fresh process, or under torchrun with ``nproc`` CPU processes (gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = [sys.executable, "-m", "auditor"]
    if nproc is not None:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "auditor",
        ]
    return subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
