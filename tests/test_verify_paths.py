"""`audit verify` and `audit report` where pipelines run them: from another folder, in another
checkout; 'missing' told from 'differs'; certificates without `paths_relative_to` keep the old rule."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from .report_fixtures import run_cli, write_certificate, write_inputs


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    """A checkout ``repo/`` certified from its root with relative paths into ``reports/vae/``."""
    root = tmp_path / "repo"
    (root / "models").mkdir(parents=True)
    monkeypatch.chdir(root)
    args = [a.replace(str(root) + "/", "") for a in write_inputs(root / "models")]
    assert run_cli(["certify", *args, "--out", "reports/vae", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path)
    return root


def cert_of(root: Path) -> Path:
    return root / "reports" / "vae" / "certificate.json"


def statuses(out: str) -> list[str]:
    return re.findall(r"^(ok|differs|missing|not a regular file) ", out, re.M)


def test_paths_are_recorded_as_given_with_the_folder_they_start_from(repo):
    cert = json.loads(cert_of(repo).read_text())
    assert [r["path"] for r in cert["inputs"]] == ["models/lat.npz", "models/probs.npz"]
    assert cert["paths_relative_to"] == "../.."
    assert (cert_of(repo).parent / cert["paths_relative_to"]).resolve() == repo.resolve()


def test_verify_from_any_folder_and_another_checkout(repo, tmp_path, monkeypatch, capsys):
    assert run_cli(["verify", str(cert_of(repo))]) == 0  # from the checkout's parent
    monkeypatch.chdir(repo / "models")
    assert run_cli(["verify", "../reports/vae/certificate.json", "--recompute"]) == 0
    moved = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(repo, moved)
    shutil.rmtree(repo)
    monkeypatch.chdir("/")
    capsys.readouterr()
    assert run_cli(["verify", str(cert_of(moved))]) == 0
    out = capsys.readouterr().out
    assert f"relative paths start from {moved.resolve()}" in out and statuses(out) == ["ok", "ok"]


def test_missing_and_differs_are_told_apart(repo, capsys):
    (repo / "models" / "lat.npz").unlink()
    with open(repo / "models" / "probs.npz", "ab") as handle:
        handle.write(b"\0")
    assert run_cli(["verify", str(cert_of(repo))]) == 1
    out = capsys.readouterr().out
    assert statuses(out) == ["missing", "differs"]
    assert "of 2 inputs: 1 missing, 1 differs" in out


def test_a_folder_where_an_input_was_is_not_ok(repo, capsys):
    (repo / "models" / "lat.npz").unlink()
    (repo / "models" / "lat.npz").mkdir()
    assert run_cli(["verify", str(cert_of(repo))]) == 1
    assert statuses(capsys.readouterr().out)[0] in ("missing", "not a regular file")


def test_old_certificates_keep_the_current_folder_rule(repo, monkeypatch, capsys):
    cert = json.loads(cert_of(repo).read_text())
    del cert["paths_relative_to"]
    write_certificate(cert_of(repo), cert)
    assert run_cli(["verify", str(cert_of(repo))]) == 1  # run from the checkout's parent: not found
    out = capsys.readouterr().out
    assert statuses(out) == ["missing", "missing"] and "records no paths_relative_to" in out
    assert run_cli(["verify", str(cert_of(repo)), "--root", str(repo)]) == 0
    monkeypatch.chdir(repo)
    assert run_cli(["verify", "reports/vae/certificate.json"]) == 0


def test_root_overrides_the_recorded_folder(repo, tmp_path):
    assert run_cli(["verify", str(cert_of(repo)), "--root", str(tmp_path)]) == 1


def test_report_finds_the_training_curve_from_another_folder(repo, tmp_path):
    epochs = np.arange(1, 5)
    (repo / "models" / "lat.csv").write_text("epoch,margin\n" + "".join(f"{e},{0.1 * e}\n" for e in epochs))
    out = tmp_path / "html"
    assert run_cli(["report", str(cert_of(repo)), "--format", "html", "--out", str(out)]) == 0
    page = (out / "certificate.html").read_text()
    assert 'id="plot-training"' in page and "No training CSV" not in page


def test_a_non_string_paths_relative_to_is_invalid(repo, capsys):
    cert = json.loads(cert_of(repo).read_text())
    cert["paths_relative_to"] = ["..", ".."]
    write_certificate(cert_of(repo), cert)
    assert run_cli(["verify", str(cert_of(repo))]) == 2
    assert "paths_relative_to" in capsys.readouterr().err
