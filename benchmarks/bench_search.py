"""Benchmark of `audit teacher search` at the seeds' scale: CIFAR-sized data, K up to 200.

    python benchmarks/bench_search.py                       # 50,000 × 3×32×32 uint8, ranks 32,64, K 10,100,200
    python benchmarks/bench_search.py --n 5000 --ranks 8 --classes 5,10    # a quick run

It writes synthetic uint8 images (clustered low-rank structure under uniform noise, rounded to
the uint8 grid, like natural images in that their spectrum has a few strong directions over a
flat floor), runs the `audit teacher search` command on them in this process with the default
temperatures, and times the whole command and each step of the grid: the PCA fit per rank, the
GMM fit per (rank, K), the held-out posteriors per (rank, K) and the scores (I_T, E_T) per
candidate. Results: ``<out>/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from auditor.cli.app import main as audit  # noqa: E402
from auditor.teachers import search  # noqa: E402

# The steps of the grid, as the search module calls them.
STEPS = ("fit_pca", "fit_gmm_on_scores", "posteriors_at_temperatures", "teacher_information", "teacher_energy")


def write_images(path: Path, n: int, shape: tuple[int, ...], seed: int = 0) -> None:
    """uint8 images: 40 cluster centres plus a 24-dimensional Gaussian spread, under 30 % uniform noise."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    dim = math.prod(shape)
    centres = rng.uniform(0.2, 0.8, size=(40, dim))
    basis = rng.normal(size=(24, dim)) * (0.3 / math.sqrt(dim))
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.uint8, shape=(n, *shape))
    for begin in range(0, n, 5000):
        end = min(n, begin + 5000)
        signal = centres[rng.integers(0, len(centres), end - begin)] + rng.normal(size=(end - begin, 24)) @ basis
        noise = rng.uniform(size=(end - begin, dim))
        out[begin:end] = np.round(255 * np.clip(0.7 * signal + 0.3 * noise, 0, 1)).reshape(end - begin, *shape)
    out.flush()
    del out
    path.with_suffix(".tmp.npy").rename(path)


def timed_steps(times: dict[str, list[float]]) -> None:
    """Wrap the search module's steps so that each call's seconds are recorded under its name."""
    for name in STEPS:
        inner = getattr(search, name)

        def wrapper(*args, _inner=inner, _name=name, **kwargs):
            start = time.perf_counter()
            result = _inner(*args, **kwargs)
            if hasattr(result, "__next__"):  # a generator: its work happens as it is consumed
                result = list(result)
            times[_name].append(time.perf_counter() - start)
            return result

        setattr(search, name, wrapper)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="training samples (every 5th is held out)")
    p.add_argument("--shape", type=ints, default=[3, 32, 32])
    p.add_argument("--ranks", default="32,64")
    p.add_argument("--classes", default="10,100,200")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: every core)")
    p.add_argument("--work", default=str(REPO / "build" / "bench"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shape = "x".join(map(str, args.shape))
    data = work / f"images_{args.n}_{shape}_uint8.npy"
    write_images(data, args.n, tuple(args.shape))

    times: dict[str, list[float]] = defaultdict(list)
    timed_steps(times)
    start = time.perf_counter()
    # The synthetic clusters are sharp: a large energy budget lets a candidate be chosen. The
    # budget only picks among the candidates; the work is the same.
    argv = [
        "teacher",
        "search",
        "--data",
        str(data),
        "--split",
        "all",
        "--ranks",
        args.ranks,
        "--classes",
        args.classes,
    ]
    argv += ["--energy-budget", "1000"]
    try:
        audit([*argv, "--out", str(work / "search-teacher.pt")])
    except SystemExit as exc:
        if exc.code:
            raise
    total = time.perf_counter() - start

    record = json.loads((work / "search-teacher.search.json").read_text())
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "load_average": os.getloadavg(),
        },
        "config": {**vars(args), "command": ["audit", *argv]},
        "total_seconds": total,
        "step_seconds": dict(times),
        "chosen": record["chosen"],
        "num_fit": record["data"]["num_fit"],
        "num_holdout": record["data"]["num_holdout"],
    }
    name = args.name or f"search-cpu-{args.n}x{shape}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(results, name))
    print(markdown(results, name))


def markdown(r: dict, name: str) -> str:
    c, machine, steps = r["config"], r["machine"], r["step_seconds"]
    ranks, classes = ints(c["ranks"]), ints(c["classes"])
    gmm = steps["fit_gmm_on_scores"]
    posteriors = steps["posteriors_at_temperatures"]
    chosen = r["chosen"]
    lines = [
        f"# {name}",
        "",
        f"`{' '.join(c['command'])} --out …`: {r['num_fit']} fit and {r['num_holdout']} held-out samples of "
        f"{c['shape']} uint8, ranks {ranks}, K {classes}, the default temperatures; torch threads "
        f"{machine['torch_threads']} of {machine['cpu_count']} cores; load average at the end "
        f"{machine['load_average'][0]:.1f} (1 min), {machine['load_average'][1]:.1f} (5 min).",
        "",
        f"**Whole command: {r['total_seconds']:.0f} s** (reading the data, the grid, writing the teacher).",
        "",
        "| step | calls | seconds |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{step}` | {len(steps[step])} | {sum(steps[step]):.1f} |" for step in STEPS if step in steps]
    lines += ["", "| rank | K | GMM fit s | held-out posteriors, every τ, s |", "| --- | --- | --- | --- |"]
    cells = [(rank, k) for rank in ranks for k in classes]
    lines += [f"| {rank} | {k} | {g:.1f} | {q:.1f} |" for (rank, k), g, q in zip(cells, gmm, posteriors)]
    lines += [
        "",
        f"PCA fits, one per rank: {', '.join(f'{s:.1f} s' for s in steps['fit_pca'])}. Chosen: rank "
        f"{chosen['rank']}, K {chosen['K']}, τ {chosen['temperature']:g} (held-out I_T {chosen['I_T']:.4f} nats).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
