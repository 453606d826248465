"""`audit teacher fit` / `audit teacher search` against scikit-learn and plain numpy (docs/mathematics.md, §3)."""

import hashlib
import json

import numpy as np
import pytest
import torch

from auditor.cli.app import main
from auditor.errors import AuditInputError
from auditor.sources.datasets.features import dataset_features
from auditor.sources.datasets.registry import open_dataset
from auditor.sources.teachers.files import load_teacher
from auditor.sources.witness_file import WitnessSettings, load_witness
from auditor.teachers.fit import fit_pca_gmm, teacher_probabilities
from auditor.teachers.pca_gmm import TEACHER_FORMAT
from auditor.teachers.search import holdout_split, search_teachers

from . import reference as ref

DESIGN_KEYS = {"format", "kind", "pca_mean", "pca_components", "log_weights", "means", "variances", "temperature"}


@pytest.fixture(scope="module")
def digits_train():
    return dataset_features(open_dataset("digits", "train"))


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def assert_usage_error(argv, capsys, *fragments):
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0]


def numpy_dict(path):
    obj = torch.load(path, weights_only=True)
    assert set(obj) == DESIGN_KEYS and obj["format"] == TEACHER_FORMAT and obj["kind"] == "pca-gmm"
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in obj.items()}


def plain_information(p):
    """I_T and E_T (p floored at 1e-12) straight from docs/mathematics.md, in numpy."""
    h = ref.entropy_rows(p)
    i_t = ref.entropy_rows(p.mean(0)[None])[0] - h.mean()
    logp = np.log(np.maximum(p, 1e-12))
    ell = logp - logp.mean(1, keepdims=True)
    return i_t, (ell**2).sum(1).mean()


# ---------------------------------------------------------------- fit


def test_posterior_matches_sklearn_predict_proba_at_temperature_one(digits_train):
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    x = digits_train
    teacher = fit_pca_gmm(x, rank=12, num_classes=7, temperature=1.0, seed=3, n_init=2)
    pca = PCA(n_components=12, random_state=3).fit(x)
    gmm = GaussianMixture(7, covariance_type="diag", random_state=3, n_init=2).fit(pca.transform(x))
    expected = gmm.predict_proba(pca.transform(x))
    got = teacher_probabilities(teacher, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # The float32 inputs the audit pass feeds give the same posterior.
    with torch.no_grad():
        got32 = teacher(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(got32, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("tau", [0.5, 3.0])
def test_posterior_at_other_temperatures_matches_numpy_softmax(digits_train, tau, tmp_path, capsys):
    out = tmp_path / "t.pt"
    code, stdout, _ = run_cli(
        [
            "teacher",
            "fit",
            "--data",
            "digits",
            "--rank",
            "6",
            "--num-classes",
            "4",
            "--temperature",
            str(tau),
            "--seed",
            "1",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0 and "wrote" in stdout
    t = numpy_dict(out)
    assert t["temperature"] == tau and t["pca_components"].shape == (6, 64) and t["means"].shape == (4, 6)
    expected = ref.pca_gmm_probs(digits_train, t)
    got = teacher_probabilities(load_teacher(out), digits_train)
    np.testing.assert_allclose(got, expected, atol=1e-10, rtol=0)
    # τ only divides the log-joint: the τ = 1 posterior raised to 1/τ and renormalised.
    p1 = ref.pca_gmm_probs(digits_train, {**t, "temperature": 1.0})
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(got, ref.softmax(np.log(p1) / tau), atol=1e-8)


def test_fit_on_a_tensor_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (30, 5)), rng.normal(3, 0.1, (30, 5))]).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    out = tmp_path / "t.pt"
    code, _, _ = run_cli(
        [
            "teacher",
            "fit",
            "--data",
            str(tmp_path / "x.npz"),
            "--split",
            "all",
            "--rank",
            "2",
            "--num-classes",
            "2",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    p = teacher_probabilities(load_teacher(out), x.astype(np.float64))
    # Two well-separated blobs: the teacher tells them apart with certainty.
    assert (p.max(1) > 0.999).all() and p[:30].argmax(1).tolist() == [p[0].argmax()] * 30
    assert p[30:].argmax(1).tolist() == [1 - p[0].argmax()] * 30


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--limit", "5", "--rank", "2", "--num-classes", "6"], ["K=6", "N = 5"]),
        (["--rank", "65", "--num-classes", "3"], ["PCA rank 65", "min(N, D)"]),
        (["--limit", "10", "--rank", "11", "--num-classes", "3"], ["PCA rank 11", "= 10"]),
        (["--rank", "0", "--num-classes", "3"], ["PCA rank 0"]),
        (["--rank", "4", "--num-classes", "1"], ["K=1"]),
        (["--rank", "4", "--num-classes", "3", "--temperature", "0"], ["temperature"]),
        (["--rank", "4", "--num-classes", "3", "--temperature", "-1"], ["temperature"]),
        (["--rank", "4", "--num-classes", "3", "--temperature", "nan"], ["temperature"]),
        (["--rank", "4", "--num-classes", "3", "--split", "validation"], ["split"]),
        (["--rank", "4", "--num-classes", "3", "--n-init", "0"], ["--n-init"]),
    ],
)
def test_fit_bad_input_is_one_line_and_writes_nothing(flags, fragments, tmp_path, capsys):
    out = tmp_path / "t.pt"
    assert_usage_error(["teacher", "fit", "--data", "digits", *flags, "--out", str(out)], capsys, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_fit_unknown_data(tmp_path, capsys):
    assert_usage_error(
        [
            "teacher",
            "fit",
            "--data",
            str(tmp_path / "nope.npz"),
            "--rank",
            "2",
            "--num-classes",
            "2",
            "--out",
            str(tmp_path / "t.pt"),
        ],
        capsys,
        "unknown data set",
    )


def test_fit_library_errors():
    x = np.random.default_rng(0).random((8, 3))
    with pytest.raises(AuditInputError, match="more than the data supports"):
        fit_pca_gmm(x, 2, 9)
    with pytest.raises(AuditInputError, match="min\\(N, D\\)"):
        fit_pca_gmm(x, 4, 2)
    with pytest.raises(AuditInputError, match="temperature"):
        fit_pca_gmm(x, 2, 2, temperature=float("inf"))


# ---------------------------------------------------------------- search

SMALL_GRID = ["--ranks", "4,8", "--classes", "3,6", "--temperatures", "1,4,16"]


def test_search_chooses_largest_held_out_information_within_budget(tmp_path, capsys, digits_train):
    out = tmp_path / "models" / "teacher.pt"
    code, stdout, _ = run_cli(
        [
            "teacher",
            "search",
            "--data",
            "digits",
            *SMALL_GRID,
            "--beta",
            "2",
            "--energy-budget",
            "6",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, stdout
    assert "chosen" in stdout and "fits" in stdout and "energy" in stdout
    record = json.loads((tmp_path / "models" / "teacher.search.json").read_text())
    table = record["candidates"]
    assert len(table) == 2 * 2 * 3 and sum(row["chosen"] for row in table) == 1
    assert record["data"]["split"] == "train" and record["energy_budget"] == 6 and record["beta"] == 2

    # Every row's numbers, recomputed in numpy from the scored teacher's formula on the held-out rows.
    _, holdout = holdout_split(digits_train, 5)
    assert record["data"]["num_holdout"] == len(holdout) == 287
    t = numpy_dict(out)
    chosen = record["chosen"]
    assert (t["pca_components"].shape[0], t["log_weights"].shape[0], t["temperature"]) == (
        chosen["rank"],
        chosen["K"],
        chosen["temperature"],
    )
    i_t, e_t = plain_information(ref.pca_gmm_probs(holdout, t))
    K = chosen["K"]
    assert chosen["I_T"] == pytest.approx(i_t, abs=1e-9)
    assert chosen["E_T"] == pytest.approx(e_t, rel=1e-9)
    assert chosen["energy"] == pytest.approx((K - 1) / (2 * K * 4) * e_t, rel=1e-9)
    for row in table:
        assert row["within_budget"] == (row["energy"] <= 6)
        assert row["energy"] == pytest.approx((row["K"] - 1) / (2 * row["K"] * 4) * row["E_T"], rel=1e-12)
    best = max((row for row in table if row["within_budget"]), key=lambda row: row["I_T"])
    assert chosen == best
    # The saved teacher was fitted on the non-held-out training rows only (and never on the test split).
    x_fit, _ = holdout_split(digits_train, 5)
    refit = fit_pca_gmm(x_fit, chosen["rank"], K, chosen["temperature"], seed=0, n_init=2).to_dict()
    for key in ("pca_mean", "pca_components", "log_weights", "means", "variances"):
        np.testing.assert_array_equal(t[key], refit[key].numpy())
    # A sharper candidate existed that gives more information but costs more than the budget.
    assert any(row["I_T"] > chosen["I_T"] and not row["within_budget"] for row in table)
    # Beside them, the witness the energies were computed for: the chosen K, β, offset 0, this teacher.
    witness = load_witness(tmp_path / "models" / "teacher.witness.json")
    assert witness == WitnessSettings(K, 2.0, 0, None, record["teacher_sha256"])
    assert record["teacher_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_search_teachers_function(digits_train):
    x_fit, x_holdout = holdout_split(digits_train[:300], 4)
    teacher, table = search_teachers(
        x_fit, x_holdout, ranks=[5], classes=[3, 4], temperatures=[2.0, 8.0], beta=2.0, energy_budget=1e6, seed=0
    )
    assert list(table.columns[:6]) == ["rank", "K", "temperature", "I_T", "E_T", "energy"]
    assert table["within_budget"].all() and table["chosen"].sum() == 1
    row = table[table["chosen"]].iloc[0]
    assert row["I_T"] == table["I_T"].max()
    assert (teacher.pca_components.shape[0], teacher.num_classes, teacher.temperature) == (
        5,
        row["K"],
        row["temperature"],
    )
    i_t, _ = plain_information(teacher_probabilities(teacher, x_holdout))
    assert row["I_T"] == pytest.approx(i_t, abs=1e-9)


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--ranks", ""], ["grid is empty", "--ranks"]),
        (["--classes", " , "], ["grid is empty", "--classes"]),
        (["--temperatures", ""], ["grid is empty"]),
        (["--ranks", "4,x"], ["--ranks", "comma-separated"]),
        (["--ranks", "65"], ["PCA rank 65"]),
        (["--classes", "2000"], ["K=2000", "more than the data supports"]),
        (["--temperatures", "1,0"], ["temperature"]),
        (["--temperatures", "-2"], ["temperature"]),
        (["--beta", "0"], ["--beta"]),
        (["--energy-budget", "-1"], ["--energy-budget"]),
        (["--energy-budget", "1e-9"], ["no candidate fits", "--beta >="]),
        (["--holdout-every", "1"], ["--holdout-every"]),
        (["--n-init", "0"], ["--n-init"]),
    ],
)
def test_search_bad_input_is_one_line_and_writes_nothing(flags, fragments, tmp_path, capsys):
    grid = {"--ranks": "4", "--classes": "3", "--temperatures": "4"}
    for flag, value in zip(flags[::2], flags[1::2]):
        grid[flag] = value
    argv = [
        "teacher",
        "search",
        "--data",
        "digits",
        "--limit",
        "200",
        *[item for pair in grid.items() for item in pair],
        *[item for pair in zip(flags[::2], flags[1::2]) if pair[0] not in grid for item in pair],
        "--out",
        str(tmp_path / "teacher.pt"),
    ]
    assert_usage_error(argv, capsys, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_search_out_must_be_a_file(tmp_path, capsys):
    assert_usage_error(["teacher", "search", "--data", "digits", "--out", str(tmp_path)], capsys, "is a folder")


def test_same_seed_same_teacher_bytes(tmp_path, capsys):
    for name in ("a", "b"):
        code, _, _ = run_cli(
            [
                "teacher",
                "search",
                "--data",
                "digits",
                "--limit",
                "300",
                "--ranks",
                "4",
                "--classes",
                "3,4",
                "--temperatures",
                "2,8",
                "--energy-budget",
                "100",
                "--out",
                str(tmp_path / name / "teacher.pt"),
            ],
            capsys,
        )
        assert code == 0
    for file in ("teacher.pt", "teacher.search.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
