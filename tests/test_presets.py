"""`audit reproduce --preset`: every preset's table is sound, and each preset runs end to end on a few
hundred synthetic images in its data set's exact layout (MNIST IDX, CIFAR-100 binary, Tiny-ImageNet
JPEGs), with the sizes shrunk through ``--set`` (the suite's only reason for those values) and a
subset of rows, one epoch: teachers searched, rows trained and certified, the table written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from auditor.nets.registry import build_model
from auditor.sources.hashing import sha256_file
from auditor.training.config import TrainConfig, resolve_config
from auditor.training.presets.registry import PRESETS
from auditor.training.presets.run import reproduce_preset
from auditor.training.reproduce import select_rows

from .cli_run import run
from .data_fixtures import write_cifar100_binary, write_mnist, write_tiny_imagenet

ROOT = Path(__file__).resolve().parent.parent
# Small enough for one CPU in seconds; clusters close enough that a PCA-GMM teacher at these
# temperatures stays within the search's energy budget.
SMALL = [
    "batch_size=64",
    "latent_dim=4",
    "prefit_epochs=1",
    "search.ranks=4",
    "search.classes=3",
    "search.temperatures=4,16,64",
]


def centres(rng, shape) -> np.ndarray:
    return rng.uniform(0.45, 0.55, size=(4, *shape))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_row_resolves_and_its_architecture_fits_the_data(name):
    preset = PRESETS[name]
    rows = select_rows(None, preset.rows)  # every protocol row's source row is there, before it
    teachers = 1 if preset.teachers == "per-seed" else preset.num_teachers
    assert {row.teacher for row in rows} == set(range(teachers))
    for row in rows:
        if row.protocol is None:
            cfg = resolve_config(
                TrainConfig(method=row.method, device="cpu", **{**preset.settings, **row.settings}), None
            )
            model = build_model(cfg.architecture(preset.sample_shape))
            mu, _ = model.encode(torch.rand(2, *preset.sample_shape))
            assert mu.shape == (2, cfg.latent_dim) and cfg.latent_dim >= max(preset.search.classes) - 1
            if cfg.arch == "conv":  # sized for the images: the stride-2 stack ends on a 4×4 grid
                assert model.decode(mu).shape == (2, *preset.sample_shape) and model._grid[1:] == (4, 4)
    protocols = {row.protocol for row in rows}
    assert {"collapse", "rescue"} <= protocols
    # docs/reproduce.md names every row of every preset
    doc = (ROOT / "docs" / "reproduce.md").read_text()
    assert all(f"`{row.name}`" in doc for row in rows), [row.name for row in rows if f"`{row.name}`" not in doc]


def test_mnist_preset_on_idx_files_from_the_command_line_and_resumed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "MNIST" / "raw"
    write_mnist(data, rng, train_count=200, test_count=60, centres=centres(rng, (28, 28)))
    out = tmp_path / "mnist-run"
    rows = "vanilla,aligned,collapse"
    args = ["reproduce", "--preset", "mnist", "--data", tmp_path / "MNIST", "--out", out, "--seeds", "0"]
    args += ["--epochs", "1", "--rows", rows, "--device", "cpu", "--quiet", "--set", "hidden=16"]
    args += [item for setting in SMALL for item in ("--set", setting)]
    code, _, err = run(args, capsys)
    assert code == 0, err
    table = pd.read_csv(out / "table.csv").set_index("row")
    assert list(table.index) == rows.split(",") and (table["seeds"] == 1).all()
    assert {"probe_accuracy_mean", "probe_margin_mean"} <= set(table.columns)
    assert "**not the certificate**" in (out / "table.md").read_text()
    preset = json.loads((out / "preset.json").read_text())
    assert preset["name"] == "mnist" and preset["overrides"]["hidden"] == [16] and preset["epochs"] == 1
    assert preset["settings"]["hidden"] == [16] and preset["search"]["ranks"] == [4]
    # One teacher, searched once, for every row; each row's numbers are `audit certify`'s.
    runs = pd.read_csv(out / "runs.csv").set_index("row")
    teacher = out / "teachers" / "teacher-t0.pt"
    assert set(runs["teacher"]) == {str(teacher)}
    search = json.loads((out / "teachers" / "teacher-t0.search.json").read_text())
    assert search["teacher_sha256"] == sha256_file(teacher) and search["seed"] == 0
    checkpoint = out / "models" / "aligned-s0.safetensors"
    code, _, err = run(
        ["certify", "--model", checkpoint, "--teacher", teacher, "--data", tmp_path / "MNIST", "--split", "test"]
        + ["--out", tmp_path / "cert", "--quiet", "--device", "cpu"],
        capsys,
    )
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    assert runs.loc["aligned", "margin"] == pytest.approx(cert["margin"], rel=1e-9)
    assert runs.loc["aligned", "sha256"] == sha256_file(checkpoint)
    # --resume keeps the teacher and every finished run: same files, same table.
    before = {path: path.read_bytes() for path in (out / "models").iterdir()} | {teacher: teacher.read_bytes()}
    code, _, err = run([*args, "--resume"], capsys)
    assert code == 0, err
    assert {path: path.read_bytes() for path in before} == before
    again = pd.read_csv(out / "runs.csv").set_index("row")
    assert again["margin"].tolist() == runs["margin"].tolist()


def test_cifar100_preset_searches_a_teacher_per_seed(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "cifar-100-binary"
    write_cifar100_binary(data, rng, train_count=200, test_count=60, centres=centres(rng, (3, 32, 32)))
    out = tmp_path / "run"
    summary = reproduce_preset(
        PRESETS["cifar100"],
        str(data),
        out,
        seeds=[0, 1],
        epochs=1,
        rows=["aligned"],
        device="cpu",
        overrides=[*SMALL, "channels=4,8"],
    )
    assert list(summary["row"]) == ["aligned"] and (summary["seeds"] == 2).all()
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(set(runs["teacher"])) == [str(out / "teachers" / f"teacher-s{s}.pt") for s in (0, 1)]
    for seed in (0, 1):
        search = json.loads((out / "teachers" / f"teacher-s{seed}.search.json").read_text())
        assert search["seed"] == seed and search["data"]["rows"] == "every row of the training split"
        assert search["data"]["num_fit"] + search["data"]["num_holdout"] == 200
    assert all(math.isfinite(m) for m in runs["margin"])


def test_tinyimagenet_preset_searches_three_teachers_on_disjoint_rows(tmp_path):
    rng = np.random.default_rng(2)
    data = tmp_path / "tiny-imagenet-200"
    wnids = ("n04", "n01", "n03", "n02")
    write_tiny_imagenet(data, rng, wnids=wnids, train_per_class=30, val_count=20, centres=centres(rng, (3, 64, 64)))
    out = tmp_path / "run"
    rows = ["aligned-t0", "collapse-t0", "vanilla-t1", "vanilla-t2"]
    reproduce_preset(
        PRESETS["tinyimagenet"], str(data), out, epochs=1, rows=rows, device="cpu", overrides=[*SMALL, "channels=4,8"]
    )
    runs = pd.read_csv(out / "runs.csv").set_index("row")
    assert list(runs.index) == rows
    assert (
        runs.loc["collapse-t0", "teacher"]
        == runs.loc["aligned-t0", "teacher"]
        == str(out / "teachers" / "teacher-t0.pt")
    )
    searches = [json.loads((out / "teachers" / f"teacher-t{t}.search.json").read_text()) for t in range(3)]
    assert [s["seed"] for s in searches] == [0, 1, 2]
    assert [s["data"]["rows"] for s in searches] == [f"rows j with j % 3 == {t}" for t in range(3)]
    assert sum(s["data"]["num_fit"] + s["data"]["num_holdout"] for s in searches) == 120  # disjoint, all rows
    assert (out / "models" / "vanilla-t2-s0.safetensors").is_file()


def test_preset_mistakes_are_one_line_exit_2_before_anything_is_written(tmp_path, capsys):
    rng = np.random.default_rng(3)
    write_mnist(tmp_path / "mnist", rng, train_count=30, test_count=10)
    write_cifar100_binary(tmp_path / "cifar", rng, train_count=30, test_count=10)
    out = tmp_path / "never"
    base = ["reproduce", "--data", tmp_path / "mnist", "--out", out, "--epochs", "1", "--quiet", "--device", "cpu"]
    cases = [
        (["--preset", "imagenet"], "unknown --preset 'imagenet' (known: cifar100, tinyimagenet, mnist)"),
        (["--preset", "mnist", "--teacher", tmp_path / "t.pt"], "drop --teacher"),
        (["--preset", "mnist", "--set", "depth=3"], "--set depth: not a preset setting"),
        (["--preset", "mnist", "--set", "lr"], "write KEY=VALUE"),
        (["--preset", "mnist", "--set", "hidden=a,b"], "--set hidden=a,b: not a valid list"),
        (["--preset", "mnist", "--set", "lr=-1"], "--lr must be a finite number > 0"),
        (["--preset", "mnist", "--set", "latent_dim=2"], "latent_dim 2 is too small for the search's largest K=15"),
        (["--preset", "mnist", "--set", "search.ranks=100"], "PCA rank 100 is not supported by the data"),
        (["--preset", "mnist", "--set", "search.ranks=4", "--set", "search.temperatures=0"], "temperature must be"),
        (["--preset", "mnist", "--rows", "rescue"], "select that row too"),
        (["--preset", "cifar100"], "expects samples of shape (3, 32, 32)"),
        (["--set", "lr=1", "--teacher", tmp_path / "t.pt"], "--set and --resume go with --preset"),
    ]
    for extra, message in cases:
        code, _, err = run([*base, *extra], capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (extra, err)
        assert not out.exists(), extra
