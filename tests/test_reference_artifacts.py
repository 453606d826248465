"""The committed reference checkpoints and certificates are the files they claim to be."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from auditor.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
CERTIFICATES = sorted((ROOT / "reports" / "digits" / "certificates").glob("*/certificate.json"))


def test_models_readme_lists_every_checkpoint_with_its_sha256():
    rows = dict(re.findall(r"\| `([^`]+)` \| \d+ \| `([0-9a-f]{64})` \|", (ROOT / "models" / "README.md").read_text()))
    files = {p.name for p in (ROOT / "models" / "digits").iterdir() if p.suffix in (".safetensors", ".pt")}
    assert files and files <= set(rows)
    for name, digest in rows.items():
        assert hashlib.sha256((ROOT / "models" / "digits" / name).read_bytes()).hexdigest() == digest, name


def test_there_is_a_reference_certificate_for_every_checkpoint():
    stems = {p.stem for p in (ROOT / "models" / "digits").glob("*.safetensors")}
    assert stems and {p.parent.name for p in CERTIFICATES} == stems


@pytest.mark.parametrize("certificate", CERTIFICATES, ids=lambda p: p.parent.name)
def test_reference_certificate_is_valid_and_its_inputs_unchanged(certificate, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # certificates name their inputs relative to the repository root
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(certificate)])
    assert exit_info.value.code == 0, capsys.readouterr()
