"""The file split rule — row i is test when i % M == 0 — on every kind of data file, from the
library and the command line, against the rule written out here in numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from auditor.errors import AuditInputError
from auditor.sources.datasets.options import DataOptions
from auditor.sources.datasets.registry import open_dataset

from .cli_run import run
from .data_fixtures import write_cifar10_binary
from .foreign_data_fixtures import assert_numbers, certify, model_and_teacher, rule_test_rows


def save(path, x, y=None):
    if path.suffix == ".npy":
        np.save(path, x)
    elif path.suffix == ".npz":
        np.savez(path, x=x, y=y)
    else:
        save_file({"x": x, "y": y}, str(path))
    return str(path)


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(1, 40),
    every=st.integers(2, 7),
    step=st.integers(1, 9),
    suffix=st.sampled_from([".npy", ".npz", ".safetensors"]),
)
def test_train_and_test_rows_follow_the_rule_in_any_batches(tmp_path_factory, count, every, step, suffix):
    x = np.arange(count * 3, dtype=np.float32).reshape(count, 3)
    y = np.arange(count) * 10
    path = save(tmp_path_factory.mktemp("rule") / f"data{suffix}", x, y)
    is_test = np.arange(count) % every == 0
    for split, rows in (("test", is_test), ("train", ~is_test), ("all", np.ones(count, bool))):
        if not rows.any():
            continue
        data = open_dataset(path, split, options=DataOptions(test_every=every))
        got = np.concatenate([data.read(i, i + step) for i in range(0, data.num_samples, step)])
        assert np.array_equal(got, x[rows]), split
        if suffix != ".npy":
            assert data.labels().tolist() == y[rows].tolist()


def test_default_rule_and_limit(tmp_path):
    path = save(tmp_path / "d.npz", np.arange(24, dtype=np.float32).reshape(12, 2), np.arange(12))
    test, train = open_dataset(path, "test"), open_dataset(path, "train", limit=4)
    assert test.labels().tolist() == [0, 5, 10] and train.labels().tolist() == [1, 2, 3, 4]
    assert open_dataset(path).split_rule == "row i of the data set is test when i % 5 == 0, train otherwise"


def test_no_rows_on_one_side_is_an_error(tmp_path):
    path = save(tmp_path / "one.npy", np.zeros((1, 2), np.float32))
    with pytest.raises(AuditInputError, match="has no samples"):
        open_dataset(path, "train")


@pytest.mark.parametrize("every", [1, 0, -3, True, 2.5])
def test_test_every_must_be_a_whole_number_of_at_least_2(every):
    with pytest.raises(AuditInputError, match="--test-every must be a whole number >= 2"):
        DataOptions(test_every=every)


def test_data_with_their_own_split_refuse_test_every(tmp_path):
    folder = tmp_path / "cifar"
    write_cifar10_binary(folder, np.random.default_rng(0))
    for spec in ("digits", str(folder)):
        with pytest.raises(AuditInputError, match="has its own train/test split"):
            open_dataset(spec, "test", options=DataOptions(test_every=3))


def test_teacher_fit_and_train_default_to_the_train_rows_of_a_file(tmp_path, capsys):
    x = np.random.default_rng(1).uniform(0, 1, (40, 64)).astype(np.float32)
    data = save(tmp_path / "x.npy", x)
    teacher = tmp_path / "fitted.pt"
    code, out, err = run(
        ["teacher", "fit", "--data", data, "--rank", "3", "--num-classes", "3", "--out", teacher], capsys
    )
    assert code == 0 and "fitted on 32 samples" in out and "(train)" in out, err
    model = tmp_path / "vae.safetensors"
    args = [
        "train",
        "--method",
        "aligned",
        "--data",
        data,
        "--teacher",
        teacher,
        "--out",
        model,
        "--epochs",
        "1",
        "--quiet",
    ]
    code, _, err = run(args, capsys)
    assert code == 0, err
    record = json.loads(__import__("safetensors").safe_open(str(model), "np").metadata()["vae_audit.training"])["data"]
    assert record["split"] == "train" and record["num_samples"] == 32 and record["split_rule"].startswith("row i")


def test_certify_test_rows_of_a_file_give_numpys_numbers(tmp_path, capsys):
    x = np.random.default_rng(2).uniform(0, 1, (30, 64)).astype(np.float32)
    code, cert, err = certify(tmp_path, capsys, save(tmp_path / "x.npy", x), "--split", "test", "--test-every", "3")
    assert code in (0, 1), err
    assert_numbers(cert, x[rule_test_rows(30, every=3)])
    assert cert["request"]["test_every"] == 3 and "i % 3 == 0" in cert["data"]["split_rule"]


def test_reading_flags_need_data(tmp_path, capsys):
    np.savez(tmp_path / "lat.npz", mu=np.zeros((4, 4), np.float32))
    np.savez(tmp_path / "p.npz", probs=np.full((4, 3), 1 / 3))
    args = ["certify", "--latents", tmp_path / "lat.npz", "--teacher-probs", tmp_path / "p.npz", "--beta", "2"]
    code, _, err = run([*args, "--test-every", "3", "--image-size", "8", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "--image-size, --test-every needs --data" in err


def test_design_and_reproduce_take_the_rule(tmp_path, capsys):
    x = np.random.default_rng(3).uniform(0, 1, (25, 64)).astype(np.float32)
    data = save(tmp_path / "x.npy", x)
    _, teacher = model_and_teacher(tmp_path)
    design = ["design", "--teacher", teacher, "--data", data, "--beta", "2", "--latent-dim", "4"]
    code, out, err = run([*design, "--split", "test", "--test-every", "4"], capsys)
    assert code == 0 and f"N = {len(rule_test_rows(25, every=4))}" in " ".join(out.split()), err
    reproduce = ["reproduce", "--data", data, "--teacher", teacher, "--rows", "vanilla-kl1", "--seeds", "0"]
    code, _, err = run(
        [*reproduce, "--epochs", "1", "--test-every", "4", "--out", tmp_path / "table", "--quiet"], capsys
    )
    assert code == 0, err
    runs = (tmp_path / "table" / "runs.csv").read_text().splitlines()
    column = runs[0].split(",").index("num_test_samples")
    assert runs[1].split(",")[column] == str(len(rule_test_rows(25, every=4)))
