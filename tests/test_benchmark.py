"""`make bench` end to end at a tiny size: it runs for every K of the sweep, writes its table, and ours
equals the naive way."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_certify", REPO / "benchmarks" / "bench_certify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def torch_threads_restored():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the benchmark sets its own count, process-wide


def test_benchmark_writes_its_results_and_ours_matches_the_naive_margin(tmp_path, torch_threads_restored):
    bench = _bench_module()
    bench.main(
        [
            "--n",
            "700",
            "--shape",
            "20",
            "--hidden",
            "16",
            "--latent",
            "4",
            "--classes",
            "5",
            "--teacher-rank",
            "5",
            "--batch-size",
            "128",
            "--repeats",
            "2",
            "--memory-n",
            "300,600",
            "--memory-shape",
            "8",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out"),
            "--name",
            "tiny",
        ]
    )
    result = json.loads((tmp_path / "out" / "tiny.json").read_text())
    table = (tmp_path / "out" / "tiny.md").read_text()

    assert [k["k"] for k in result["by_classes"]] == [5]
    for k in result["by_classes"]:
        assert all(len(k["all_seconds"][v]) == 2 for v in ("floor", "ours", "naive", "floor_again"))
        # loading the model and the teacher takes some time, and only part of the audit's
        assert all(
            0 < less < whole for less, whole in zip(k["all_seconds"]["ours_less_model_load"], k["all_seconds"]["ours"])
        )
        for name, ratio in k["ratios"].items():
            values = ratio if isinstance(ratio, list) else [ratio]
            assert all(math.isfinite(v) and v > 0 for v in values), name
        margins = k["margin_ours_vs_naive"]
        assert math.isclose(margins["ours"], margins["naive"], rel_tol=1e-9, abs_tol=1e-12)
        assert set(k["flat_memory"]["by_n"]) == {"300", "600"}
        assert k["floor_posterior_max_error"] <= 1e-12  # the floor computes the audit's posterior
        assert f"## K = {k['k']}, d = 4" in table
    assert "A/A control" in table and "| floor (forward passes only) |" in table

    # a sweep: one summary row and one section per K, in order
    sweep = {**result, "by_classes": [result["by_classes"][0], {**result["by_classes"][0], "k": 7}]}
    lines = bench.markdown(sweep, "sweep").splitlines()
    assert [line.split(" |")[0] for line in lines if line.startswith(("| 5 |", "| 7 |"))] == ["| 5", "| 7"]
    assert [line for line in lines if line.startswith("## K")] == ["## K = 5, d = 4", "## K = 7, d = 4"]


def test_each_k_of_the_sweep_gets_its_own_teacher_and_enough_latents():
    bench = _bench_module()
    args = bench.parse_args(["--classes", "10,100,200"])
    assert [(a.k, a.latent) for a in (bench.for_classes(args, k) for k in args.classes)] == [
        (10, 32),
        (100, 100),
        (200, 200),
    ]
    fixed = bench.parse_args(["--classes", "10,100", "--latent", "128"])
    assert [bench.for_classes(fixed, k).latent for k in fixed.classes] == [128, 128]


def test_the_floor_uses_none_of_the_packages_teacher_pass_or_certificate_code():
    """A floor built from our own modules would measure us against ourselves."""
    import ast

    tree = ast.parse((REPO / "benchmarks" / "bench_certify.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    packages = {name for name in imported if name.startswith("auditor")}
    assert not any(
        name.startswith(("auditor.teachers", "auditor.certificate", "auditor.sources.teachers")) for name in packages
    )
    # run_audit (ours) is the one entry into the pass
    assert {name for name in packages if name.startswith("auditor.audit")} == {
        "auditor.audit.pipeline",
        "auditor.audit.request",
    }


def test_training_benchmark_runs_and_its_plain_loop_trains_the_same_model(tmp_path, torch_threads_restored):
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "benchmarks" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--n", "200", "--shape", "3,8,8", "--channels", "4,8", "--latent", "4", "--k", "3"]
    args += ["--batch-size", "64", "--repeats", "2", "--out", str(tmp_path), "--name", "tiny"]
    result = bench.main(args)
    assert json.loads((tmp_path / "tiny.json").read_text())["config"]["n"] == 200
    assert "ours / plain throughput" in (tmp_path / "tiny.md").read_text()
    assert all(len(result["all_seconds"][v]) == 2 for v in ("ours", "plain"))
    # Same weights, batch order and noise: on a CPU the plain loop is the trainer's arithmetic.
    assert result["max_abs_weight_difference"] == 0.0
    assert result["final_margin"]["ours"] == pytest.approx(result["final_margin"]["plain"], rel=1e-9)


def test_preset_timing_runs_at_a_tiny_size(tmp_path):
    """benchmarks/bench_preset.py (run on a GPU by benchmarks/gpu_check.sh) works end to end."""
    spec = importlib.util.spec_from_file_location("bench_preset", REPO / "benchmarks" / "bench_preset.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    small = ["channels=4,8", "latent_dim=4", "search.ranks=4", "search.classes=3", "search.temperatures=16,64"]
    args = ["--n", "150", "--epochs", "2", "--device", "cpu", "--out", str(tmp_path), "--name", "tiny"]
    result = bench.main(args + [item for setting in small for item in ("--set", setting)])
    assert len(result["epoch_seconds"]) == 2 and result["seconds_per_epoch"] > 0
    assert result["full_table"] == {"seeds": 5, "rows": 15, "epochs": 100, "searches": 5}
    assert result["full_table_upper_bound_hours"] > 0 and "epochs per minute" in (tmp_path / "tiny.md").read_text()
