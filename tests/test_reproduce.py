"""`audit reproduce`: a reduced table (1 seed, few epochs) that still shows the pattern, the
summary arithmetic against numpy, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from auditor.sources.checkpoint import load_checkpoint
from auditor.sources.datasets.registry import open_dataset
from auditor.sources.hashing import sha256_file
from auditor.sources.teachers.files import save_teacher
from auditor.teachers.fit import fit_pca_gmm
from auditor.training.reproduce import DEFAULT_ROWS, METRICS, Row, select_rows, summarize

from .cli_run import run

CI_ROWS = "vanilla-kl1,vanilla-kl8,aligned-kl1,aligned-kl8,prefit,collapse,rescue"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    train = open_dataset("digits", "train")
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    # The kind of teacher `audit teacher search` picks on digits (rank 16, K 10, τ 8).
    save_teacher(fit_pca_gmm(train.read(0, train.num_samples), rank=16, num_classes=10, temperature=8.0, seed=0), path)
    return path


def test_reduced_table_shows_prevention_collapse_rescue(teacher, tmp_path, capsys):
    out, models = tmp_path / "report", tmp_path / "models"
    code, stdout, err = run(
        [
            "reproduce",
            "--data",
            "digits",
            "--seeds",
            "0",
            "--out",
            out,
            "--models-out",
            models,
            "--teacher",
            teacher,
            "--epochs",
            "8",
            "--rows",
            CI_ROWS,
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(out / "table.csv").set_index("row")
    assert list(table.index) == CI_ROWS.split(",")
    certified = table["certified"].to_dict()
    for row in ("aligned-kl1", "aligned-kl8", "prefit", "rescue"):
        assert certified[row] == 1, (row, table.loc[row].to_dict())
    for row in ("vanilla-kl1", "vanilla-kl8", "collapse"):
        assert certified[row] == 0, (row, table.loc[row].to_dict())
    # Each row's numbers are the certificate `audit certify` gives its checkpoint on the test split.
    runs = pd.read_csv(out / "runs.csv").set_index("row")
    code, _, err = run(
        [
            "certify",
            "--model",
            models / "aligned-kl8-s0.safetensors",
            "--teacher",
            teacher,
            "--data",
            "digits",
            "--split",
            "test",
            "--out",
            tmp_path / "cert",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    assert runs.loc["aligned-kl8", "margin"] == pytest.approx(cert["margin"], rel=1e-9)
    assert runs.loc["aligned-kl8", "margin_lcb"] == pytest.approx(cert["margin_lcb"], rel=1e-9)
    assert runs.loc["aligned-kl8", "active_units"] == cert["diagnostics"]["active_units"]
    # The protocols continue the checkpoints of their source rows.
    t = load_checkpoint(models / "rescue-s0.safetensors").training
    assert t["protocol"] == "rescue" and t["init"]["sha256"] == sha256_file(models / "collapse-s0.safetensors")
    assert (models / "collapse-s0.csv").is_file()
    assert "| aligned-kl8 | aligned | 8 | 1/1 |" in (out / "table.md").read_text()


def test_summary_is_mean_and_sample_std_over_seeds():
    rng = np.random.default_rng(0)
    runs = []
    for row in ("a", "b"):
        for seed in range(3):
            runs.append(
                {
                    "row": row,
                    "method": "vanilla",
                    "protocol": "",
                    "kl_weight": 1.0,
                    "seed": seed,
                    "epochs_run": 5,
                    "certified": seed < 2 if row == "a" else False,
                    **{column: float(rng.normal()) for column, _ in METRICS},
                }
            )
    frame = pd.DataFrame(runs)
    summary = summarize(frame).set_index("row")
    assert summary.loc["a", "certified"] == 2 and summary.loc["b", "certified"] == 0
    for column, _ in METRICS:
        values = frame[frame.row == "a"][column].to_numpy()
        assert summary.loc["a", f"{column}_mean"] == pytest.approx(values.mean())
        assert summary.loc["a", f"{column}_std"] == pytest.approx(np.sqrt(((values - values.mean()) ** 2).sum() / 2))


def test_default_rows_are_the_issue_table_and_extendable():
    names = [r.name for r in DEFAULT_ROWS]
    assert names == [
        "vanilla-kl1",
        "vanilla-kl2",
        "vanilla-kl4",
        "vanilla-kl8",
        "aligned-kl1",
        "aligned-kl2",
        "aligned-kl4",
        "aligned-kl8",
        "prefit",
        "beta-0.5",
        "free-bits",
        "kl-anneal",
        "cyclical",
        "collapse",
        "rescue",
        "lidvae",
        "lidvae-aligned",
        "lidvae-strong",
        "const-var",
        "const-var-aligned",
        "vanilla-gaussian",
    ]
    extra = Row("cyclical-m2", "cyclical", {"cycles": 2})
    assert select_rows(["vanilla-kl1", "cyclical-m2"], [*DEFAULT_ROWS, extra])[-1] == extra


def test_bad_input_is_one_line_exit_2(teacher, tmp_path, capsys):
    base = ["reproduce", "--data", "digits", "--out", tmp_path / "r", "--teacher", teacher, "--epochs", "1", "--quiet"]
    cases = [
        (["--rows", "vanilla-kl3"], "unknown row vanilla-kl3"),
        (["--rows", "rescue"], "select that row too"),
        (["--seeds", "0,x"], "--seeds"),
        (["--seeds", "1,1"], "distinct"),
        (["--epochs", "0"], "--epochs"),
        (["--teacher", tmp_path / "none.pt"], "no such teacher"),
        (["--save-seeds", "0"], "--save-seeds needs --models-out"),
    ]
    for extra, message in cases:
        args = list(base)
        for i in range(0, len(extra), 2):
            if extra[i] in args:
                args[args.index(extra[i]) + 1] = extra[i + 1]
            else:
                args += extra[i : i + 2]
        code, _, err = run(args, capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (extra, err)
    assert not (tmp_path / "r").exists()
