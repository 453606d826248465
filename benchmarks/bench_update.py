"""The certificate state's update alone: CPU seconds per 100,000 rows at several K, against another checkout.

    python benchmarks/bench_update.py                                   # this checkout
    python benchmarks/bench_update.py --against /path/to/other/checkout  # e.g. `git worktree add ../main main`

Each implementation runs in its own fresh process (PYTHONPATH set to its checkout), the
processes alternating for ``--repeats`` rounds; each times ``CertificateState.update`` on the
same synthetic rows (Dirichlet teacher rows, Gaussian means and log-variances, float32 as an
encoder gives them) in updates of each ``--rows`` size, on one thread, in the thread's CPU
seconds. Printed: medians per (K, rows) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def worker(args) -> None:
    """In a fresh process whose `auditor` is the checkout under test: print {"K,rows": s per 100k}."""
    import numpy as np
    import torch

    from auditor.certificate.state import CertificateState
    from auditor.certificate.witness import WitnessSpec

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    out = {}
    for k in args.classes:
        d = max(32, k)
        mu = torch.from_numpy(rng.normal(0, 1.5, size=(args.total, d)).astype(np.float32))
        logvar = torch.from_numpy(rng.normal(-1, 0.5, size=(args.total, d)).astype(np.float32))
        p = torch.from_numpy(rng.dirichlet(np.full(k, 0.3), size=args.total))
        for rows in args.rows:
            best = []
            for _ in range(2):  # the first round warms up (allocator, caches)
                state = CertificateState(WitnessSpec(k, d, 2.0))
                start = time.thread_time()
                for begin in range(0, args.total, rows):
                    state.update(mu[begin : begin + rows], p[begin : begin + rows], logvar[begin : begin + rows])
                best.append((time.thread_time() - start) / args.total * 1e5)
            out[f"{k},{rows}"] = best[-1]
    print(json.dumps(out))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=ints, default=[10, 100, 200])
    p.add_argument("--rows", type=ints, default=[1024, 4096], help="rows per update")
    p.add_argument("--total", type=int, default=32768, help="rows per measurement")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--against", default=None, help="another checkout's root, timed beside this one")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    roots = {"this checkout": REPO, **({"other": Path(args.against).resolve()} if args.against else {})}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in roots}
    forwarded = ["--classes", ",".join(map(str, args.classes)), "--rows", ",".join(map(str, args.rows))]
    for rep in range(args.repeats):
        order = list(roots.items())[rep % len(roots) :] + list(roots.items())[: rep % len(roots)]
        for name, root in order:
            env = {**os.environ, "PYTHONPATH": str(root)}
            command = [sys.executable, __file__, "--worker", *forwarded, "--total", str(args.total)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=root)
            for key, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
                times[name].setdefault(key, []).append(seconds)
    print(f"CPU seconds per 100,000 rows (median of {args.repeats}); load average {os.getloadavg()[0]:.1f}")
    names = list(roots)
    print("| K | rows per update | " + " | ".join(names) + (" | other / this |" if len(names) > 1 else " |"))
    print("| --- | --- |" + " --- |" * (len(names) + (len(names) > 1)))
    for key in times[names[0]]:
        med = [statistics.median(times[name][key]) for name in names]
        ratio = f" {med[1] / med[0]:.2f} |" if len(names) > 1 else ""
        k, rows = key.split(",")
        print(f"| {k} | {rows} | " + " | ".join(f"{m:.3f}" for m in med) + " |" + ratio)


if __name__ == "__main__":
    main()
