"""The measurements behind the input limits of docs/formats.md, side by side in one run.

    python benchmarks/bench_limits.py                  # a few minutes on 2 CPU cores
    python benchmarks/bench_limits.py --quick          # smaller sizes, for a smoke run

Every number is the peak resident memory above what the process held after its imports (VmHWM −
VmRSS, read from /proc) and the wall time of one operation, each in a fresh process:

1. the certificate state: a real ``CertificateState`` (three updates of 512 rows, then compute)
   against the estimate the budget is checked with (``auditor.certificate.budget.state_bytes``):
   the ratio must stay below 1;
2. a 10,000-image CIFAR python batch written by pickle at protocols 2, 4 and 5, and one written
   as Python 2 did: our reader against ``pickle.load`` (numpy's own reconstruction);
3. claims in headers: an ``.npz`` member claiming 10¹³ elements, a deflated member inflating to
   400 MB that declares 800 bytes, and a truthful one of 1.6 GB: our reader against
   ``np.load`` — run under a 4 GiB address-space cap, so that ``np.load`` fails instead of
   taking the machine;
4. a JSON nesting bomb of 100,000 levels as a certificate: the time to refuse it.

Results are printed and saved as ``benchmarks/results/limits.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hostile_fixtures import npz_bomb, npz_claiming, python2_batch  # noqa: E402

_MEASURE = """
import resource, sys, time
sys.path.insert(0, {repo!r})
{imports}
def memory(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key)) * 1024
cap = {cap}
if cap:
    resource.setrlimit(resource.RLIMIT_AS, (memory("VmSize:") + cap, resource.RLIM_INFINITY))
base, start = memory("VmRSS:"), time.perf_counter()
try:
{body}
    outcome = "ok"
except Exception as exc:
    outcome = type(exc).__name__ + ": " + str(exc).splitlines()[0][:80]
print(repr((memory("VmHWM:") - base, time.perf_counter() - start, outcome)))
"""


def measure(imports: str, body: str, cap: int = 0) -> tuple[int, float, str]:
    """(peak bytes above the post-import resident size, seconds, outcome) of ``body`` in a fresh process."""
    code = _MEASURE.format(repo=str(REPO), imports=imports, body=textwrap.indent(body, "    "), cap=cap)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if done.returncode:
        return 0, 0.0, f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"
    return eval(done.stdout.strip().splitlines()[-1])  # our own repr of a tuple


def state_memory(sizes: list[tuple[int, int]]) -> list[dict]:
    """Peak memory of a state for each (K, d), above that of the smallest state (K = d = 2): what
    torch's first operations take (tens of MiB) is not the state's and is left out."""
    rows = []
    for k, d in [(2, 2), *sizes]:
        imports = (
            "import torch\nfrom auditor.certificate.state import CertificateState\n"
            "from auditor.certificate.witness import WitnessSpec\ntorch.set_num_threads(1)"
        )
        body = f"""g = torch.Generator().manual_seed(0)
mu = torch.randn(512, {d}, generator=g)
p = torch.softmax(torch.randn(512, {k}, generator=g, dtype=torch.float64), 1)
state = CertificateState(WitnessSpec({k}, {d}, 1.0))
for _ in range(3):
    state.update(mu, p)
state.compute()"""
        peak, seconds, outcome = measure(imports, body)
        from auditor.certificate.budget import state_bytes

        estimate = state_bytes(k, d)
        rows.append({"K": k, "d": d, "peak": peak, "estimate_mib": estimate / 2**20, "outcome": outcome})
    base = rows[0]["peak"]
    for row in rows:
        row["measured_mib"] = (row["peak"] - base) / 2**20
        row["ratio"] = row["measured_mib"] / row["estimate_mib"]
    return rows[1:]


def cifar_batches(folder: Path, count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, count)]
    batch = {b"batch_label": b"b1", b"labels": labels, b"data": images.reshape(count, 3072),
             b"filenames": [f"img_{i}.png".encode() for i in range(count)]}  # fmt: skip
    files = {f"protocol {p}": pickle.dumps(batch, protocol=p) for p in (2, 4, 5)}
    files["Python 2 (cPickle, protocol 2)"] = python2_batch(images, labels)
    rows = []
    for name, payload in files.items():
        path = folder / "test_batch"
        path.write_bytes(payload)
        ours = measure(
            "from auditor.sources.datasets.cifar_python import _open_cifar_pickle",
            f"rows = _open_cifar_pickle(__import__('pathlib').Path({str(path)!r}), 'labels'); rows.labels()",
        )
        plain = measure("import pickle, numpy", f"pickle.load(open({str(path)!r}, 'rb'), encoding='bytes')")
        rows.append({"file": name, "mib": len(payload) / 2**20, "ours": ours, "pickle.load": plain})
    return rows


def claims(folder: Path, quick: bool) -> list[dict]:
    rows = []
    cases = {
        "member claiming 10^13 elements over 8 bytes": npz_claiming(folder / "claim.npz", "mu", (10**13, 1)),
        "deflated 400 MB declared as 800 bytes": npz_bomb(
            folder / "lying.npz", "mu", (100, 1), zeros=(4 * 10**7 if quick else 4 * 10**8), declared_data=800
        ),
        "deflated 1.6 GB, declared truthfully": npz_bomb(
            folder / "big.npz", "mu", (2 * 10**8, 1), zeros=0 if quick else 16 * 10**8, declared_data=16 * 10**8
        ),
    }
    for name, path in cases.items():
        ours = measure(
            "from auditor.sources.arrays import open_array", f"open_array({str(path)!r}, 'mu').read(0, 1)", 4 << 30
        )
        plain = measure("import numpy as np", f"np.load({str(path)!r})['mu']", 4 << 30)
        rows.append({"file": name, "bytes": path.stat().st_size, "ours": ours, "np.load": plain})
    return rows


def json_bomb(folder: Path) -> dict:
    path = folder / "bomb.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    ours = measure("from auditor.certificate.check import load_certificate", f"load_certificate({str(path)!r})")
    plain = measure("import json", f"json.loads(open({str(path)!r}).read())")
    return {"ours": ours, "json.loads": plain}


def _mib(result) -> str:
    peak, seconds, outcome = result
    return f"{peak / 2**20:.1f} MiB, {seconds:.3f} s ({outcome})"


def report(results: dict) -> str:
    lines = ["# Input limits: measurements", "", f"Machine: {results['machine']}", "", "## Certificate state", ""]
    lines += ["Peak memory above that of a K = d = 2 state, against `state_bytes(K, d)`.", ""]
    lines += ["| K | d | measured MiB | estimate MiB | measured / estimate |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {r['K']} | {r['d']} | {r['measured_mib']:.0f} | {r['estimate_mib']:.0f} | {r['ratio']:.2f} |"
        for r in results["state"]
    ]
    lines += ["", "## CIFAR python batches", "", "| file | MiB | ours | pickle.load |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r['file']} | {r['mib']:.1f} | {_mib(r['ours'])} | {_mib(r['pickle.load'])} |" for r in results["cifar"]
    ]
    lines += ["", "## Claims in .npz headers (4 GiB address-space cap)", "", "| file | bytes | ours | np.load |"]
    lines += ["| --- | --- | --- | --- |"]
    lines += [f"| {r['file']} | {r['bytes']} | {_mib(r['ours'])} | {_mib(r['np.load'])} |" for r in results["claims"]]
    bomb = results["json_bomb"]
    lines += ["", "## JSON nesting bomb (100,000 levels)", ""]
    lines += [f"ours: {_mib(bomb['ours'])}; json.loads: {_mib(bomb['json.loads'])}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of a minute")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for limits.json/.md")
    args = parser.parse_args()
    sizes = (
        [(100, 100), (500, 500)] if args.quick else [(500, 500), (1000, 1000), (2000, 2000), (500, 4000), (3000, 3000)]
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        results = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            "state": state_memory(sizes),
            "cifar": cifar_batches(folder, 1000 if args.quick else 10_000),
            "claims": claims(folder, args.quick),
            "json_bomb": json_bomb(folder),
        }
    text = report(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "limits-quick" if args.quick else "limits"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
