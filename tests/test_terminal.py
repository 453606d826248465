"""The terminal summary: 80 columns, colour only on a terminal, and `--json` for scripts."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys

import pytest
from rich.cells import cell_len
from rich.console import Console

from auditor.reports.terminal import print_summary

from .report_fixtures import certify, run_cli, write_inputs

ANSI = "\x1b["
# Environment variables with which rich overrides its terminal detection.
COLOUR_OVERRIDES = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


@pytest.mark.parametrize("aligned,view", [(True, True), (False, False)])
def test_summary_fits_in_80_columns(tmp_path, aligned, view):
    _, cert = certify(tmp_path, aligned=aligned, view=view)
    # The longest rows: the model diagnostics of a checkpoint audit, with wide values.
    cert["diagnostics"]["model"] = {
        key: {"computed": True, field: -12345.678901}
        for key, field in (("mutual_information", "value"), ("ima_contrast", "mean"), ("identifiability", "gap"))
    }
    cert["diagnostics"]["model"]["self_consistency"] = {"computed": True, "latent": 98765.4321, "data": 12345.6789}
    console = Console(width=80, record=True, file=io.StringIO(), force_terminal=True)
    print_summary(cert, console)
    text = console.export_text()
    lines = text.splitlines()
    assert len(lines) > 15
    assert max(cell_len(line) for line in lines) <= 80
    assert cert["verdict"].replace("_", " ") in text
    assert "margin Ĝ = I_T − L" in text


def test_no_colour_when_not_a_terminal(tmp_path, capsys, monkeypatch):
    for name in COLOUR_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    args = write_inputs(tmp_path)
    assert run_cli(["certify", *args, "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert "VAE audit certificate" in captured.out
    assert ANSI not in captured.out and ANSI not in captured.err


def test_colour_on_a_terminal(tmp_path):
    args = write_inputs(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in (*COLOUR_OVERRIDES, "TERM", "COLUMNS")}
    env.update(TERM="xterm-256color", COLUMNS="80", PYTHONPATH=os.pathsep.join(sys.path))
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor", "certify", *args, "--out", str(tmp_path / "r")],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(timeout=120) == 0
    out = b"".join(chunks).decode("utf-8", "replace")
    assert "certified" in out and ANSI in out


def test_json_prints_only_the_certificate_on_stdout(tmp_path, capsys):
    args = write_inputs(tmp_path)
    assert run_cli(["certify", *args, "--out", str(tmp_path / "r"), "--json", "--format", "json,md"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == json.loads((tmp_path / "r" / "certificate.json").read_text())
    assert "VAE audit certificate" in captured.err  # the summary went to stderr
    assert run_cli(["certify", *args, "--out", str(tmp_path / "r"), "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["verdict"] == "certified" and captured.err == ""


def test_a_reason_from_the_certificate_is_shown_inert_in_the_terminal_and_in_markdown(tmp_path):
    from auditor.reports.markdown import render_markdown

    _, cert = certify(tmp_path)
    reason = "the model's likelihood '[red]x[/] | `y`\x1b[31m' is not one of bernoulli, gaussian"
    cert["diagnostics"]["model"]["ima_contrast"] = {"computed": False, "reason": reason}
    console = Console(width=200, record=True, file=io.StringIO(), force_terminal=False)
    print_summary(cert, console)
    text = console.export_text()
    assert "not computed: the model's likelihood '[red]x[/] | `y` [31m'" in text  # markup shown, escape code gone
    assert "\x1b" not in text
    row = next(line for line in render_markdown(cert).splitlines() if line.startswith("| IMA contrast"))
    escaped = "'\\[red\\]x\\[/\\] \\| \\`y\\` \\[31m'"  # every Markdown special backslash-escaped
    assert (
        row
        == f"| IMA contrast of the decoder | not computed: the model's likelihood {escaped} is not one of bernoulli, gaussian |"
    )
