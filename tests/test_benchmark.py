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
