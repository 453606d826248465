"""The design view (docs/mathematics.md, margin–energy path) against plain numpy, and `audit design`."""

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from auditor.certificate.design import design_summary, design_table, recommend_beta, teacher_energy
from auditor.cli.app import main
from auditor.errors import AuditInputError
from auditor.sources.datasets.features import dataset_features
from auditor.sources.teachers.files import load_teacher
from auditor.sources.witness_file import WitnessSettings, load_witness
from auditor.teachers.fit import teacher_probabilities

from . import reference as ref
from .test_teacher_fit import assert_usage_error, run_cli


def plain_path(p, K, d, beta, ts, offset=0):
    """Margin and energy of μ_t = t·μ*(p) from the definitions: μ* built in numpy, margin by ref.certificate."""
    logp = np.log(np.maximum(p, 1e-12))
    ell = logp - logp.mean(1, keepdims=True)
    mu_star = (K - 1) / (K * beta) * ell @ ref.witness_S(K, d, offset).T
    return [
        (ref.certificate(t * mu_star, p, K, beta, offset)["margin"], ((t * mu_star) ** 2).sum(1).mean()) for t in ts
    ]


def random_teacher(seed, n=50, K=4, zeros=False):
    rng = np.random.default_rng(seed)
    p = ref.softmax(rng.normal(0, 3, (n, K)))
    if zeros:  # rows where some class has underflowed to exactly 0
        p[::3, 0] = 0.0
        p /= p.sum(1, keepdims=True)
    return p


@pytest.mark.parametrize("zeros", [False, True])
def test_path_ends_and_every_point_match_numpy(zeros):
    K, d, beta = 4, 6, 1.7
    p = random_teacher(0, K=K, zeros=zeros)
    table = design_table(p, beta, d)
    assert isinstance(table, pd.DataFrame)
    assert table["t"].tolist() == pytest.approx([i / 10 for i in range(11)])
    p_bar = p.mean(0)
    H_bar = ref.entropy_rows(p_bar[None])[0]
    I_T = H_bar - ref.entropy_rows(p).mean()
    # t = 0: the uniform predictor; t = 1: the analytic code reproduces p, so L = 0 and Ĝ = I_T.
    assert table["margin"].iloc[0] == pytest.approx(H_bar - math.log(K), abs=1e-12)
    assert table["margin"].iloc[-1] == pytest.approx(I_T, abs=1e-9)
    assert table["alignment_loss"].iloc[-1] == pytest.approx(0.0, abs=1e-9)
    for (margin, energy), row in zip(plain_path(p, K, d, beta, table["t"]), table.itertuples()):
        assert row.margin == pytest.approx(margin, abs=1e-10)
        assert row.energy == pytest.approx(energy, rel=1e-9, abs=1e-12)
        assert row.prior_cost == pytest.approx(energy / 2, rel=1e-9, abs=1e-12)
    # The margin grows along the path.
    assert (np.diff(table["margin"]) > 0).all()


def test_path_with_witness_offset_and_custom_ts():
    K, d, beta = 3, 7, 0.8
    p = random_teacher(1, K=K)
    ts = [0.0, 0.25, 2.0]
    table = design_table(p, beta, d, ts=ts, offset=3)
    for (margin, energy), row in zip(plain_path(p, K, d, beta, ts, offset=3), table.itertuples()):
        assert row.margin == pytest.approx(margin, abs=1e-10)
        assert row.energy == pytest.approx(energy, rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(logits=arrays(np.float64, (12, 5), elements=st.floats(-30, 30)), beta=st.floats(0.1, 10))
def test_full_analytic_code_certifies_exactly_I_T(logits, beta):
    p = ref.softmax(logits)
    table = design_table(p, beta, 4, ts=[1.0])
    I_T = ref.entropy_rows(p.mean(0)[None])[0] - ref.entropy_rows(p).mean()
    assert table["margin"].iloc[0] == pytest.approx(I_T, abs=1e-8)


def test_summary_and_recommended_beta():
    K, d, beta, budget = 5, 8, 2.0, 3.0
    p = random_teacher(2, K=K)
    logp = np.log(p)
    e_t = ((logp - logp.mean(1, keepdims=True)) ** 2).sum(1).mean()
    s = design_summary(p, beta, d, budget)
    assert s["E_T"] == pytest.approx(e_t, rel=1e-12) == teacher_energy(p)
    assert s["teacher_information"] == pytest.approx(
        ref.entropy_rows(p.mean(0)[None])[0] - ref.entropy_rows(p).mean(), abs=1e-12
    )
    assert s["analytic_code_energy"] == pytest.approx((K - 1) / (K * beta**2) * e_t, rel=1e-12)
    assert s["prior_cost"] == pytest.approx(s["analytic_code_energy"] / 2, rel=1e-12)
    b = recommend_beta(e_t, K, budget)
    assert s["recommended_beta"] == pytest.approx(b, rel=1e-12)
    # The smallest β that fits: at b the prior cost is exactly the budget, just below b it exceeds it.
    assert (K - 1) / (2 * K * b**2) * e_t == pytest.approx(budget, rel=1e-12)
    assert (K - 1) / (2 * K * (0.999 * b) ** 2) * e_t > budget
    assert s["within_budget"] == (beta >= b)
    assert recommend_beta(0.0, K, budget) == 0.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: design_table(p, 2.0, 2), "latent dimension"),
        (lambda p: design_table(p, 0.0, 6), "beta"),
        (lambda p: design_table(p, -1.0, 6), "beta"),
        (lambda p: design_table(p, 2.0, 6, ts=[]), "at least one t"),
        (lambda p: design_table(p, 2.0, 6, ts=[float("nan")]), "finite"),
        (lambda p: design_table(p[:, :1], 2.0, 6), "K >= 2"),
        (lambda p: design_table(p + 0.5, 2.0, 6), "not probability vectors"),
        (lambda p: recommend_beta(1.0, 4, 0.0), "--energy-budget"),
    ],
)
def test_library_errors(call, match):
    with pytest.raises(AuditInputError, match=match):
        call(random_teacher(3))


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("design") / "teacher.pt"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "teacher",
                "fit",
                "--data",
                "digits",
                "--rank",
                "8",
                "--num-classes",
                "6",
                "--temperature",
                "4",
                "--out",
                str(path),
            ]
        )
    assert info.value.code == 0
    return path


def test_design_command_prints_the_numbers_and_writes_the_path(digits_teacher, tmp_path, capsys):
    csv, witness = tmp_path / "path.csv", tmp_path / "witness.json"
    code, out, err = run_cli(
        [
            "design",
            "--teacher",
            str(digits_teacher),
            "--data",
            "digits",
            "--split",
            "test",
            "--beta",
            "2",
            "--latent-dim",
            "8",
            "--energy-budget",
            "5",
            "--csv",
            str(csv),
            "--witness-out",
            str(witness),
        ],
        capsys,
    )
    assert code == 0, err
    # The witness settings chosen here, for training (load_witness) and for audit certify --witness.
    teacher_sha = hashlib.sha256(digits_teacher.read_bytes()).hexdigest()
    assert load_witness(witness) == WitnessSettings(6, 2.0, 0, 8, teacher_sha)
    from auditor.sources.datasets.registry import open_dataset

    x = dataset_features(open_dataset("digits", "test"))
    p = teacher_probabilities(load_teacher(digits_teacher), x)
    s = design_summary(p, 2.0, 8, 5.0)
    assert f"I_T = {s['teacher_information']:.4f}" in out
    assert f"{s['E_T']:.3f}" in out and f"{s['prior_cost']:.3f}" in out
    assert f"{s['recommended_beta']:.4g}" in out
    written = pd.read_csv(csv)
    pd.testing.assert_frame_equal(written, design_table(p, 2.0, 8), check_exact=False, rtol=1e-12)
    assert written["margin"].iloc[-1] == pytest.approx(s["teacher_information"], abs=1e-9)


def test_design_bad_input(digits_teacher, tmp_path, capsys):
    base = ["design", "--teacher", str(digits_teacher), "--data", "digits"]
    assert_usage_error([*base, "--beta", "2", "--latent-dim", "4"], capsys, "latent dimension d=4", "K=6")
    assert_usage_error([*base, "--beta", "0", "--latent-dim", "8"], capsys, "--beta")
    assert_usage_error([*base, "--beta", "-2", "--latent-dim", "8"], capsys, "--beta")
    assert_usage_error([*base, "--beta", "2", "--latent-dim", "8", "--energy-budget", "0"], capsys, "--energy-budget")
    assert_usage_error(
        [*base, "--beta", "2", "--latent-dim", "8", "--witness-out", str(tmp_path)], capsys, "is a folder"
    )
    np.savez(tmp_path / "small.npz", x=np.random.default_rng(0).random((20, 10)).astype(np.float32))
    assert_usage_error(
        [
            "design",
            "--teacher",
            str(digits_teacher),
            "--data",
            str(tmp_path / "small.npz"),
            "--beta",
            "2",
            "--latent-dim",
            "8",
        ],
        capsys,
        "size 64",
        "size 10",
    )
    assert_usage_error(
        ["design", "--teacher", str(digits_teacher), "--data", "mnist-please", "--beta", "2", "--latent-dim", "8"],
        capsys,
        "unknown data set",
    )
    assert_usage_error(
        ["design", "--teacher", str(tmp_path / "none.pt"), "--data", "digits", "--beta", "2", "--latent-dim", "8"],
        capsys,
        "no such teacher file",
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "small.npz"]


def test_design_with_a_trusted_program_teacher(tmp_path, capsys):
    import torch

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 3)
    program = torch.export.export(linear, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "teacher.pt2"
    torch.export.save(program, str(path))
    argv = ["design", "--teacher", str(path), "--data", "digits", "--split", "test", "--beta", "1", "--latent-dim", "2"]
    assert_usage_error(argv, capsys, "--trust-teacher-code")
    code, out, err = run_cli([*argv, "--trust-teacher-code"], capsys)
    assert code == 0, err
    from auditor.sources.datasets.registry import open_dataset

    x = open_dataset("digits", "test").read(0, 360).astype(np.float64)
    logits = x @ linear.weight.detach().double().numpy().T + linear.bias.detach().double().numpy()
    p = ref.softmax(logits)
    I_T = ref.entropy_rows(p.mean(0)[None])[0] - ref.entropy_rows(p).mean()
    assert f"I_T = {I_T:.4f}" in out
