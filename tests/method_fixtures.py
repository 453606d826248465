"""A digits teacher and a train-then-certify round trip through the CLI, shared by the method tests."""

from __future__ import annotations

import json

import pytest

from auditor.cli.app import main
from auditor.sources.datasets.features import dataset_features
from auditor.sources.datasets.registry import open_dataset
from auditor.sources.teachers.files import save_teacher
from auditor.teachers.fit import fit_pca_gmm


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_teacher(fit_pca_gmm(dataset_features(open_dataset("digits", "train")), rank=8, num_classes=6, seed=0), path)
    return path


def save_digits_teacher(path):
    """PCA(10) → 10-component GMM at τ 1 on digits' training split (the trainer tests' teacher), saved to ``path``."""
    train = open_dataset("digits", "train")
    save_teacher(fit_pca_gmm(train.read(0, train.num_samples), rank=10, num_classes=10, temperature=1.0, seed=0), path)
    return path


def train_and_certify(method: str, tmp_path, capsys, teacher, epochs: int = 3) -> dict:
    """`audit train --method METHOD` briefly on digits, then `audit certify` of its checkpoint on the test split."""
    out = tmp_path / f"{method}.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "--method",
                method,
                "--data",
                "digits",
                "--teacher",
                str(teacher),
                "--epochs",
                str(epochs),
                "--hidden",
                "32",
                "--latent-dim",
                "8",
                "--out",
                str(out),
                "--quiet",
            ]
        )
    assert exit_info.value.code == 0, capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "certify",
                "--model",
                str(out),
                "--teacher",
                str(teacher),
                "--data",
                "digits",
                "--split",
                "test",
                "--out",
                str(tmp_path / "report"),
                "--quiet",
            ]
        )
    cert = json.loads((tmp_path / "report" / "certificate.json").read_text())
    assert exit_info.value.code == (0 if cert["verdict"] == "certified" else 1)
    assert cert["model"]["training"]["method"] == method
    return cert
