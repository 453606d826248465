"""Sharding across torchrun ranks: ranges, the all-reduce, and a real 2-process gloo run."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from auditor.audit.distributed import Ranks, combine_across_ranks, process_group, ranks_from_env, shard_range
from auditor.sources.hashing import HASH_SKIPPED, hashing_skipped, sha256_file

from . import pass_fixtures as fx
from .cli_run import run_in_processes

REPO = Path(__file__).resolve().parents[1]


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_shards_cover_every_row_exactly_once_in_rank_order(n, world):
    ranges = [shard_range(n, rank, world) for rank in range(world)]
    rows = np.concatenate([np.arange(a, b) for a, b in ranges])
    assert np.array_equal(rows, np.arange(n))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_shard_of_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError):
        shard_range(10, 2, 2)


def test_ranks_from_torchrun_environment():
    assert ranks_from_env({}) == Ranks(0, 1, 0)
    ranks = ranks_from_env({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (ranks.rank, ranks.world_size, ranks.local_rank, ranks.is_main, ranks.distributed) == (5, 8, 1, False, True)


def test_single_process_needs_no_process_group():
    with process_group(torch.device("cpu"), Ranks()) as ranks:
        assert not ranks.distributed
    count = torch.tensor(3)
    assert combine_across_ranks(fx.fresh_state(), count, ranks) is count


def test_hashing_is_skipped_only_inside_the_block(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with hashing_skipped():
        assert sha256_file(path) == HASH_SKIPPED
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _numbers(tree, prefix=""):
    """Every number of a certificate JSON, by its path (booleans and strings excluded)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{prefix}/{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _numbers(value, f"{prefix}/{i}")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, tree


def _certify(args, nproc=None, cwd=REPO):
    return run_in_processes(["certify", *args], nproc, cwd)


def test_two_gloo_processes_give_the_single_process_numbers(tmp_path):
    x = fx.inputs(301)
    paths = fx.write_inputs(tmp_path, x)
    common = [
        "--model",
        str(paths["model"]),
        "--teacher",
        str(paths["teacher"]),
        "--data",
        str(paths["data"]),
        "--device",
        "cpu",
        "--batch-size",
        "32",
        "--confidence",
        "0.9",
    ]
    single = _certify([*common, "--out", str(tmp_path / "single")])
    double = _certify([*common, "--out", str(tmp_path / "double")], nproc=2)
    assert single.returncode in (0, 1), single.stderr
    assert double.returncode == single.returncode, double.stderr
    assert double.stdout.count("wrote ") == 1  # only rank 0 prints (and writes)

    one = json.loads((tmp_path / "single" / "certificate.json").read_text())
    two = json.loads((tmp_path / "double" / "certificate.json").read_text())
    assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
    assert two["inputs"] == one["inputs"]  # rank 0 hashed every input
    assert all(entry["sha256"] != HASH_SKIPPED for entry in two["inputs"])
    for doc in (one, two):
        doc.pop("settings")
        doc.pop("command")
        doc.pop("request", None)
    a, b = dict(_numbers(one)), dict(_numbers(two))
    assert a.keys() == b.keys() and len(a) > 20
    for key in a:
        assert math.isclose(a[key], b[key], rel_tol=1e-12, abs_tol=1e-15), (key, a[key], b[key])
    assert one["num_samples"] == two["num_samples"] == 301
    assert one["verdict"] == two["verdict"]


def test_bad_rows_in_one_shard_fail_every_rank(tmp_path):
    x = fx.inputs(40)
    x[35] = np.inf  # in rank 1's shard only
    paths = fx.write_inputs(tmp_path, x)
    result = _certify(
        [
            "--model",
            str(paths["model"]),
            "--teacher",
            str(paths["teacher"]),
            "--data",
            str(paths["data"]),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
        ],
        nproc=2,
    )
    assert result.returncode != 0
    assert result.stderr.count("error: input data contain NaN or inf in 1 samples") == 2  # both ranks
    assert "exitcode  : 2" in result.stderr  # torchrun's own report: our ranks exited with 2
    assert not (tmp_path / "out").exists()


def test_a_rank_other_than_0_exits_0_and_writes_nothing_even_when_not_certified(tmp_path, monkeypatch, capsys):
    """A non-zero exit of rank 1 would make torchrun kill rank 0, possibly before its report exists."""
    from types import SimpleNamespace

    import auditor.cli.certify
    from auditor.cli.app import main  # first: it registers the command modules

    not_certified = SimpleNamespace(verdict=SimpleNamespace(certified=False))
    monkeypatch.setattr(auditor.cli.certify, "run_audit", lambda request, progress=None: not_certified)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "certify",
                "--latents",
                "mu.npy",
                "--teacher-probs",
                "p.npy",
                "--beta",
                "1",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == "" and not (tmp_path / "out").exists()
