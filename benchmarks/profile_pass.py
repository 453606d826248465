"""Where an audit's time goes: CPU seconds and page faults per thread, and the forward passes alone.

    python benchmarks/profile_pass.py --classes 200        # after `make bench` wrote the inputs

Runs ``run_audit`` on the inputs ``bench_certify.py`` wrote (build/bench/) and samples, from
/proc, the CPU seconds and minor page faults of each of the audit's threads: the calling thread
(the forward passes and the loop), the reader (``audit-prefetch``), the update worker
(``audit-update``) and the input hashing (``audit-hash``). Then it times, on the calling thread alone, the parts
of the forward passes over the same batches in memory: the encoder, the package's teacher and
the floor's teacher (bench_certify.FloorTeacher). Medians of ``--repeats`` runs. Linux only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_certify as bench  # noqa: E402

from auditor.audit.pipeline import run_audit  # noqa: E402
from auditor.audit.request import AuditRequest  # noqa: E402
from auditor.sources.teachers.files import load_teacher  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_counters() -> dict[int, tuple[float, int]]:
    """{native thread id: (CPU seconds, minor page faults)} of this process's threads."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended between listing and reading
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = ((int(fields[11]) + int(fields[12])) / TICK, int(fields[7]))
    return out


def profile_audit(request: AuditRequest) -> dict[str, tuple[float, int]]:
    """(CPU seconds, page faults) per thread role for one run_audit; threads are sampled every 20 ms
    (helper threads end with the pass, so their last sample is kept)."""
    names: dict[int, str] = {threading.get_native_id(): "calling thread (forward passes, loop)"}
    last: dict[int, tuple[float, int]] = {}
    done = threading.Event()
    sampler_id = []

    def sample() -> None:
        sampler_id.append(threading.get_native_id())
        while not done.is_set():
            for thread in threading.enumerate():
                if thread.native_id is not None and thread.native_id not in names:
                    names[thread.native_id] = thread.name
            last.update(thread_counters())
            time.sleep(0.02)

    before = thread_counters()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run_audit(request)
    last.update(thread_counters())
    done.set()
    sampler.join()
    roles: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for tid, (cpu, faults) in last.items():
        if tid in sampler_id:
            continue
        base_cpu, base_faults = before.get(tid, (0.0, 0))
        role = names.get(tid, "other")
        role = "audit-hash" if role.startswith("audit-hash") else role
        roles[role][0] += cpu - base_cpu
        roles[role][1] += faults - base_faults
    return {role: (cpu, int(faults)) for role, (cpu, faults) in roles.items() if cpu > 0.005}


@torch.no_grad()
def forward_parts(paths, args, repeats: int) -> dict[str, float]:
    """Calling-thread CPU seconds of each part of the forward passes, over the batches in memory."""
    device = torch.device("cpu")
    model = bench.load_model(paths, device)
    ours, floor = load_teacher(paths["teacher"]).eval(), bench.FloorTeacher(paths["teacher"], device)
    data = np.load(paths["data"], mmap_mode="r")
    batches = [torch.from_numpy(np.array(data[b : b + args.batch_size])) for b in range(0, args.n, args.batch_size)]
    parts = {"encoder": model.encode, "package teacher": ours, "floor teacher": floor}
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, part in parts.items():
            start = time.thread_time()
            for x in batches:
                part(x)
            times[name].append(time.thread_time() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", default=str(REPO / "build" / "bench"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run = bench.for_classes(bench.parse_args(["--n", str(args.n), "--work", args.work]), args.classes)
    paths = bench.prepare(run)
    request = AuditRequest(
        model=paths["model"],
        teacher=paths["teacher"],
        data=str(paths["data"]),
        batch_size=run.batch_size,
        device="cpu",
        model_diagnostics=False,
    )
    run_audit(request)  # warm-up
    runs = [profile_audit(request) for _ in range(args.repeats)]
    print(f"K = {args.classes}, N = {args.n}, medians of {args.repeats} audits; load average {os.getloadavg()[0]:.1f}")
    print("| thread | CPU s | minor page faults |\n| --- | --- | --- |")
    for role in sorted({role for r in runs for role in r}):
        cpu = statistics.median(r.get(role, (0.0, 0))[0] for r in runs)
        faults = statistics.median(r.get(role, (0.0, 0))[1] for r in runs)
        print(f"| {role} | {cpu:.3f} | {faults:.0f} |")
    print("\n| forward part, calling thread alone | CPU s |\n| --- | --- |")
    for name, seconds in forward_parts(paths, run, args.repeats).items():
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
