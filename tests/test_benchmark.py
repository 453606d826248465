"""`make bench` end to end at a tiny size: it runs, writes its table, and ours equals the naive way."""

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
            "--k",
            "3",
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

    assert all(len(result["all_seconds"][v]) == 2 for v in ("floor", "ours", "naive", "floor_again"))
    # loading the model and the teacher takes some time, and only part of the audit's
    assert all(
        0 < less < whole
        for less, whole in zip(result["all_seconds"]["ours_less_model_load"], result["all_seconds"]["ours"])
    )
    for name, ratio in result["ratios"].items():
        values = ratio if isinstance(ratio, list) else [ratio]
        assert all(math.isfinite(v) and v > 0 for v in values), name
    margins = result["margin_ours_vs_naive"]
    assert math.isclose(margins["ours"], margins["naive"], rel_tol=1e-9, abs_tol=1e-12)
    assert set(result["flat_memory"]["by_n"]) == {"300", "600"}
    assert "A/A control" in table and "| floor (forward passes only) |" in table


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
