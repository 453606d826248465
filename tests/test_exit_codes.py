"""The exit code is a promise: 0 and 1 only for a verdict, 130 for an interrupt, 2 for everything
else — with one `error: …` line on stderr, a traceback only when asked for, and no report."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import auditor.cli.certify as certify_command
import auditor.cli.verify as verify_command
import auditor.sources.atomic as atomic

from .cli_run import run
from .report_fixtures import certify, write_inputs

FACTORY = """
import torch
from torch import nn


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def encode(self, x):
        raise ValueError("an encoder bug\\nwith a second line")


def make():
    return Broken()
"""


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def broken_factory(tmp_path):
    """A folder with a module whose encode raises ValueError, data, teacher probabilities and an old report."""
    (tmp_path / "brokenfactory.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.uniform(size=(12, 4)).astype(np.float32))
    np.save(tmp_path / "probs.npy", rng.dirichlet(np.ones(3), size=12))
    old = tmp_path / "reports"
    old.mkdir()
    (old / "certificate.json").write_text('{"an": "older report"}\n')
    (old / "certificate.md").write_text("# an older report\n")
    args = ["certify", "--arch", "brokenfactory:make", "--data", "x.npy", "--teacher-probs", "probs.npy"]
    return tmp_path, [*args, "--beta", "1", "--out", "reports"]


def _audit(folder: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "AUDIT_DEBUG"}
    environment.update(PYTHONPATH=os.pathsep.join(sys.path), **env)
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args], cwd=folder, env=environment, capture_output=True, text=True
    )


def test_an_unexpected_exception_exits_2_with_one_line(broken_factory):
    folder, args = broken_factory
    before = _folder_bytes(folder / "reports")
    done = _audit(folder, args)
    assert done.returncode == 2
    assert done.stderr == "error: ValueError: an encoder bug\n"
    assert done.stdout == ""
    assert _folder_bytes(folder / "reports") == before  # the old report, byte for byte


def test_audit_debug_adds_the_traceback(broken_factory):
    folder, args = broken_factory
    done = _audit(folder, args, AUDIT_DEBUG="1")
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr and "raise ValueError" in done.stderr
    assert done.stderr.endswith("error: ValueError: an encoder bug\n")


def test_debug_option_adds_the_traceback(broken_factory, capsys, monkeypatch):
    folder, args = broken_factory
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    code, _, err = run(["--debug", *args], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err
    code, _, err = run(args, capsys)  # the option does not outlive its run
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1


def test_a_full_disk_exits_2_and_names_it(tmp_path, capsys, monkeypatch):
    code, _ = certify(tmp_path, formats="json")
    assert code == 0

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "_write_all", full)
    code, out, err = run(["report", tmp_path / "report" / "certificate.json", "--format", "md"], capsys)
    assert code == 2 and out == ""
    assert err == "error: OSError: [Errno 28] No space left on device\n"


def test_a_crash_in_verify_is_not_a_verdict(tmp_path, capsys, monkeypatch):
    certify(tmp_path, formats="json")

    def crash(record, root):
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(verify_command, "input_status", crash)
    code, _, err = run(["verify", tmp_path / "report" / "certificate.json"], capsys)
    assert (code, err) == (2, "error: RuntimeError: unforeseen\n")


def test_an_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    def interrupted(request, progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(certify_command, "run_audit", interrupted)
    code, _, err = run(["certify", *write_inputs(tmp_path), "--out", tmp_path / "r"], capsys)
    assert (code, err) == (130, "error: interrupted\n")
    assert not (tmp_path / "r").exists()


def test_error_line_shows_a_hostile_path_as_escapes(tmp_path, capsys):
    args = write_inputs(tmp_path)
    args[1] = str(tmp_path / "a\n\x1b[31mb.npz")
    code, _, err = run(["certify", *args, "--out", tmp_path / "r"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "\x1b" not in err
    assert "a\\x0a\\x1b[31mb.npz: no such file" in err


def test_usage_error_exits_2(capsys):
    code, _, err = run(["certify", "--no-such-flag"], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
