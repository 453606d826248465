"""Benchmark of `audit certify`: the forward-pass floor, our audit, and the naive way, in one run.

    python benchmarks/bench_certify.py                 # defaults below; `make bench` runs this
    python benchmarks/bench_certify.py --n 50000 --shape 3,32,32 --dtype uint8 --arch conv --device cuda

For each K of ``--classes`` (default 10, 100 and 200: the class counts of the seeds' experiments)
it writes its own synthetic data (N samples of SHAPE in a .npy file, around 10 random centres),
a random reference model (``mlp`` or ``conv``, d = max(32, K) latents unless ``--latent``) and a
PCA-GMM teacher with K components, then measures, repeated ``--repeats`` times and interleaved
(floor, ours, naive, floor again, rotating the order):

- floor: the encoder's forward pass and the teacher posterior in its cheapest exact form, over the
  same batches already in memory as float32 tensors on the device, and nothing else: the work no
  audit can avoid. The posterior is written here (:class:`FloorTeacher`), from the teacher file
  and torch alone, never from the package's teacher, pass or certificate code: a floor built
  from our own modules would measure us against ourselves. It is checked against the
  definition's posterior (plain numpy) before anything is timed;
- ours: ``run_audit`` end to end (open and hash inputs, load the model and the teacher, stream
  the data from disk, certificate state, compute, verdict), excluding process start-up; and the
  same less the loading of the model and the teacher, which ``run_audit`` times itself (the
  issue's measure excludes it). Model diagnostics (a fixed-size sample, not part of the
  certificate) are timed apart and reported beside it;
- naive: what people write today: a torch DataLoader over the memory-mapped array, means and
  teacher probabilities collected in lists, concatenated, and §1 (Ĝ, I_T, L, LCB) computed after.

Peak resident memory is measured in fresh processes (one per variant and per N): ours and
naive at ``--n``, and ours at each ``--memory-n`` (flat-in-N check), at every K. Results:
medians, quartiles and ratios, printed and saved as ``<out>/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from auditor.audit.pipeline import run_audit  # noqa: E402
from auditor.audit.request import AuditRequest  # noqa: E402
from auditor.nets.registry import build_model  # noqa: E402
from auditor.sources.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from auditor.sources.datasets.dataset import to_unit_float  # noqa: E402

BETA = 2.0
DATA_CENTRES = 10  # clusters in the synthetic data, whatever the teacher's K
TEACHER_TEMPERATURE = 4.0


# ---------------------------------------------------------------------------- synthetic inputs


def write_data(path: Path, n: int, shape: tuple[int, ...], k: int, dtype: str, seed: int = 0) -> None:
    """N samples around K random centres, clipped to [0, 1] (uint8: ×255), written in chunks."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    dim = math.prod(shape)
    centres = rng.uniform(0.2, 0.8, size=(k, dim)).astype(np.float32)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(n, *shape))
    chunk = max(1, (64 << 20) // (4 * dim))
    for begin in range(0, n, chunk):
        end = min(n, begin + chunk)
        labels = rng.integers(0, k, end - begin)
        x = np.clip(centres[labels] + rng.normal(0, 0.15, size=(end - begin, dim)).astype(np.float32), 0, 1)
        out[begin:end] = (np.round(x * 255) if dtype == "uint8" else x).reshape(end - begin, *shape)
    out.flush()
    del out
    tmp.rename(path)


def architecture(args) -> dict:
    shape = list(args.shape)
    if args.arch == "mlp":
        return {
            "name": "mlp",
            "input_shape": shape,
            "hidden": args.hidden,
            "latent_dim": args.latent,
            "activation": "relu",
            "likelihood": "bernoulli",
        }
    return {
        "name": "conv",
        "input_shape": shape,
        "channels": args.channels,
        "latent_dim": args.latent,
        "activation": "relu",
        "likelihood": "bernoulli",
    }


def write_model(path: Path, args) -> None:
    torch.manual_seed(0)
    arch = architecture(args)
    save_checkpoint(
        path, build_model(arch), arch, {"num_classes": args.k, "beta": BETA, "offset": 0}, {"method": "random"}
    )


def write_teacher(path: Path, data: Path, k: int, rank: int, rows: int = 20000) -> None:
    """A PCA(rank) → K-component diagonal GMM fitted with scikit-learn to the first ``rows`` rows,
    as ``audit teacher fit`` fits one (written here with scikit-learn and torch alone).

    A fitted teacher, not one made up: its components are tight and far from the PCA origin, where
    the audit's teacher must recompute the entries that matter by the definition (on this data at
    K = 200, about 20 a row). Results before 2026-11-30 used random centres with the data's own
    variance in every component, where that repair never ran.
    """
    if path.exists():
        return
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    x = np.load(data, mmap_mode="r")[:rows]
    x = x.reshape(len(x), -1).astype(np.float64) / (255.0 if x.dtype == np.uint8 else 1.0)
    pca = PCA(n_components=rank, random_state=0).fit(x)
    gmm = GaussianMixture(n_components=k, covariance_type="diag", random_state=0).fit(pca.transform(x))
    obj = {
        "format": "vae-audit-teacher/1",
        "kind": "pca-gmm",
        "pca_mean": torch.tensor(pca.mean_),
        "pca_components": torch.tensor(pca.components_.copy()),
        "log_weights": torch.tensor(np.log(gmm.weights_)),
        "means": torch.tensor(gmm.means_),
        "variances": torch.tensor(gmm.covariances_),
        "temperature": TEACHER_TEMPERATURE,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.rename(path)


def prepare(args) -> dict[str, Path]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shape = "x".join(map(str, args.shape))
    paths = {
        "data": work / f"data_{args.n}_{shape}_{args.dtype}.npy",
        "model": work / f"model_{args.arch}_{shape}_d{args.latent}_k{args.k}.safetensors",
        "teacher": work / f"teacher_{shape}_k{args.k}_fitted.pt",
    }
    write_data(paths["data"], args.n, tuple(args.shape), DATA_CENTRES, args.dtype)
    write_model(paths["model"], args)
    write_teacher(paths["teacher"], paths["data"], args.k, args.teacher_rank)
    return paths


# ---------------------------------------------------------------------------- the floor's teacher


class FloorTeacher:
    """The PCA → diagonal-GMM posterior in its cheapest exact form (docs/performance.md), read from
    ``teacher.pt`` with torch alone: y = x·Cᵀ − mean·Cᵀ and, per component k,

        Σ_j (y_j − m_kj)²/v_kj = (y∘y)·(1/v_k) − 2 y·(m_k/v_k) + Σ_j m_kj²/v_kj,

    so that a batch costs three matrix products (the projection and two B×r×K) and a softmax,
    all in float64 as the definition asks.
    """

    def __init__(self, path: Path, device: torch.device):
        fields = torch.load(path, map_location=device, weights_only=True)
        components, mean = fields["pca_components"].double(), fields["pca_mean"].double()
        means, variances = fields["means"].double(), fields["variances"].double()
        self.components_t = components.T
        self.minus_mean_projected = -(mean @ components.T)
        self.inv_var_t = (1 / variances).T.contiguous()
        self.minus_2_mean_over_var_t = (-2 * means / variances).T.contiguous()
        c = (means * means / variances).sum(dim=1)
        self.constant = fields["log_weights"].double() - 0.5 * (c + torch.log(2 * math.pi * variances).sum(dim=1))
        self.temperature = float(fields["temperature"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.addmm(self.minus_mean_projected, x.reshape(x.shape[0], -1).double(), self.components_t)
        squares = (y * y) @ self.inv_var_t
        log_joint = torch.addmm(squares, y, self.minus_2_mean_over_var_t).mul_(-0.5).add_(self.constant)
        return torch.softmax(log_joint / self.temperature, dim=1)


def definition_posterior(path: Path, x: np.ndarray) -> np.ndarray:
    """The teacher posterior as docs/formats.md defines it (a K×r broadcast per row), in numpy."""
    t = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in torch.load(path, weights_only=True).items()}
    y = (x.reshape(len(x), -1).astype(np.float64) - t["pca_mean"]) @ t["pca_components"].T
    terms = (y[:, None, :] - t["means"][None]) ** 2 / t["variances"][None] + np.log(2 * np.pi * t["variances"])[None]
    z = (t["log_weights"][None] - 0.5 * terms.sum(axis=2)) / t["temperature"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------- the three variants


def load_model(paths, device):
    return load_checkpoint(paths["model"]).model.to(device).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run_floor(batches, model, teacher: FloorTeacher, device) -> float:
    sync(device)
    start = time.perf_counter()
    for x in batches:
        model.encode(x)
        teacher(x)
    sync(device)
    return time.perf_counter() - start


def run_ours(paths, args, diagnostics: bool) -> tuple[float, object]:
    request = AuditRequest(
        model=paths["model"],
        teacher=paths["teacher"],
        data=str(paths["data"]),
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        model_diagnostics=diagnostics,
    )
    start = time.perf_counter()
    result = run_audit(request)
    sync(torch.device(args.device))
    return time.perf_counter() - start, result


def run_hashing(paths) -> float:
    """sha256 of the three input files, as the report records them (ours does it on a worker thread)."""
    from auditor.sources.hashing import sha256_file

    start = time.perf_counter()
    for path in paths.values():
        sha256_file(path)
    return time.perf_counter() - start


class _Rows(torch.utils.data.Dataset):
    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.array[i]))


@torch.no_grad()
def run_naive(paths, args, model, teacher, device) -> tuple[float, float]:
    """DataLoader → lists → concatenate → §1 afterwards. Returns (seconds, margin)."""
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(_Rows(np.load(paths["data"], mmap_mode="r")), batch_size=args.batch_size)
    mus, probs = [], []
    for x in loader:
        x = to_unit_float(x.to(device))
        mus.append(model.encode(x)[0])
        probs.append(teacher(x))
    mu, p = torch.cat(mus).double(), torch.cat(probs).double()
    spec_S = torch.as_tensor(helmert_witness(args.k, mu.shape[1]), device=device)
    logq = torch.log_softmax(BETA * mu @ spec_S, dim=1)
    ce = -(p * logq).sum(1)
    h = -torch.special.xlogy(p, p).sum(1)
    p_bar = p.mean(0)
    h_bar = -torch.special.xlogy(p_bar, p_bar).sum()
    margin = h_bar - ce.mean()
    psi = -((p - p_bar) @ torch.where(p_bar > 0, p_bar.log(), 0.0)) - (ce - ce.mean())
    lcb = margin - 1.6448536269514722 * (psi.var() / len(p)).sqrt()
    _ = (h_bar - h.mean(), (ce - h).mean(), float(lcb))
    sync(device)
    return time.perf_counter() - start, float(margin)


def helmert_witness(k: int, d: int) -> np.ndarray:
    """S (d×K): sqrt(K/(K−1)) times the Helmert sub-matrix in the first K−1 rows (docs/mathematics.md)."""
    S = np.zeros((d, k))
    for j in range(1, k):
        S[j - 1, :j] = 1 / math.sqrt(j * (j + 1))
        S[j - 1, j] = -j / math.sqrt(j * (j + 1))
    return math.sqrt(k / (k - 1)) * S


# ---------------------------------------------------------------------------- memory (fresh processes)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory_worker(args) -> None:
    """One variant in this (fresh) process; prints {"baseline_mib", "peak_mib"} as JSON."""
    torch.set_num_threads(args.threads)
    paths = prepare(args)
    device = torch.device(args.device)
    model, teacher = load_model(paths, device), FloorTeacher(paths["teacher"], device)
    baseline = _status_kib("VmRSS")  # imports and one model in memory
    if args.worker == "ours":
        run_ours(paths, args, diagnostics=False)
    else:
        run_naive(paths, args, model, teacher, device)
    print(json.dumps({"baseline_mib": baseline / 1024, "peak_mib": _status_kib("VmHWM") / 1024}))


def measure_memory(args, variant: str, n: int) -> dict:
    argv = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--n",
        str(n),
        "--work",
        args.work,
        "--shape",
        ",".join(map(str, args.shape)),
        "--dtype",
        args.dtype,
        "--classes",
        str(args.k),
        "--arch",
        args.arch,
        "--hidden",
        ",".join(map(str, args.hidden)),
        "--channels",
        ",".join(map(str, args.channels)),
        "--latent",
        str(args.latent),
        "--teacher-rank",
        str(args.teacher_rank),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--precision",
        args.precision,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="samples in the timed runs")
    p.add_argument("--shape", type=ints, default=[784], help="sample shape, e.g. 784 or 3,32,32 (D = product)")
    p.add_argument("--dtype", choices=["float32", "uint8"], default="float32")
    p.add_argument("--classes", type=ints, default=[10, 100, 200], help="teacher classes K, one measurement each")
    p.add_argument("--arch", choices=["mlp", "conv"], default="mlp")
    p.add_argument("--hidden", type=ints, default=[256, 256], help="mlp hidden sizes")
    p.add_argument("--channels", type=ints, default=[32, 64, 128], help="conv channels")
    p.add_argument("--latent", type=int, default=None, help="latent dimension d (default max(32, K))")
    p.add_argument("--teacher-rank", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable numbers on a shared CPU)")
    p.add_argument("--memory-n", type=ints, default=[10_000, 1_000_000], help="N values of the flat-memory check")
    p.add_argument("--memory-shape", type=ints, default=[64], help="sample shape of the flat-memory check (always mlp)")
    p.add_argument("--work", default=str(REPO / "build" / "bench"), help="where the synthetic inputs go")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default=None, help="result file name (default: <device>-<N>x<shape>-<dtype>-<arch>)")
    p.add_argument("--worker", choices=["ours", "naive"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:  # a memory worker measures one K, given as --classes K
        args.k = args.classes[0]
    return args


def for_classes(args, k: int) -> argparse.Namespace:
    """The arguments of one K of the sweep: its teacher, and d = max(32, K) latents unless --latent."""
    return argparse.Namespace(**{**vars(args), "k": k, "latent": args.latent or max(32, k)})


def quartiles(values: list[float]) -> list[float]:
    """First and third quartiles by the "inclusive" method: within the measured range (the default
    extrapolates past it on few repeats)."""
    return statistics.quantiles(values, n=4, method="inclusive")[::2] if len(values) > 1 else [values[0]] * 2


def measure(args, device: torch.device) -> dict:
    """Every variant for one K (``args.k``), interleaved and repeated; medians, quartiles, ratios, memory."""
    paths = prepare(args)
    model, teacher = load_model(paths, device), FloorTeacher(paths["teacher"], device)

    data = np.load(paths["data"], mmap_mode="r")
    batches = [
        to_unit_float(torch.from_numpy(np.array(data[b : b + args.batch_size])).to(device))
        for b in range(0, args.n, args.batch_size)
    ]
    # The floor must compute the posterior the audit computes: checked on a few batches, untimed.
    sample = torch.cat(batches[:4])
    with torch.no_grad():
        floor_error = float(
            np.abs(teacher(sample).cpu().numpy() - definition_posterior(paths["teacher"], sample.cpu().numpy())).max()
        )
    if not floor_error <= 1e-12:
        raise SystemExit(f"the floor's posterior is {floor_error:.3g} from the definition's: it is not a floor")
    run_floor(batches[:2], model, teacher, device)  # warm-up (and page cache) for every variant
    run_ours(paths, args, diagnostics=False)

    # "floor_again" is an A/A control: the floor timed a second time in each repeat. Its ratio to
    # the floor is 1 but for the machine's noise, so it says how far apart two equal costs can
    # measure here: the resolution of every other ratio in the table.
    # "ours_less_model_load" is the measure: the audit end to end, less the time it spent
    # loading the encoder and the teacher (timed inside run_audit).
    times: dict[str, list[float]] = {
        "floor": [],
        "ours": [],
        "ours_less_model_load": [],
        "ours_with_model_diagnostics": [],
        "naive": [],
        "hashing_inputs_alone": [],
        "floor_again": [],
    }
    # CPU seconds of each timed run: the calling (main) thread's, and the whole process's
    # (ours adds its reader, update and hashing threads): where the time beyond the floor goes.
    cpu: dict[str, dict[str, list[float]]] = {
        v: {"main_thread": [], "process": []} for v in ("floor", "ours", "naive", "floor_again")
    }
    margins = {}
    order = ["floor", "ours", "naive", "floor_again"]
    for rep in range(args.repeats):
        for variant in order[rep % len(order) :] + order[: rep % len(order)]:
            thread_start, process_start = time.thread_time(), time.process_time()
            if variant in ("floor", "floor_again"):
                times[variant].append(run_floor(batches, model, teacher, device))
            elif variant == "ours":
                seconds, result = run_ours(paths, args, diagnostics=False)
                times["ours"].append(seconds)
                times["ours_less_model_load"].append(seconds - result.model_load_seconds)
                margins["ours"] = result.numbers.margin
            else:
                seconds, margins["naive"] = run_naive(paths, args, model, teacher, device)
                times["naive"].append(seconds)
            cpu[variant]["main_thread"].append(time.thread_time() - thread_start)
            cpu[variant]["process"].append(time.process_time() - process_start)
        print(
            f"K={args.k} repeat {rep + 1}/{args.repeats}: "
            + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items() if v),
            flush=True,
        )
    times["ours_with_model_diagnostics"].append(run_ours(paths, args, diagnostics=True)[0])
    times["hashing_inputs_alone"] = [run_hashing(paths) for _ in range(3)]  # part of ours, for the breakdown
    del batches

    memory = {"ours": measure_memory(args, "ours", args.n), "naive": measure_memory(args, "naive", args.n)}
    flat_args = argparse.Namespace(**{**vars(args), "shape": args.memory_shape, "arch": "mlp"})  # the setting
    for n in args.memory_n:  # written here, so that no worker's peak includes writing its data
        prepare(argparse.Namespace(**{**vars(flat_args), "n": n}))
    flat = {n: measure_memory(flat_args, "ours", n) for n in args.memory_n}

    med = {k: statistics.median(v) for k, v in times.items() if v}

    def per_repeat(top: str, bottom: str) -> list[float]:
        return [a / b for a, b in zip(times[top], times[bottom])]

    return {
        "k": args.k,
        "latent": args.latent,
        "floor_posterior_max_error": floor_error,
        "median_seconds": med,
        "all_seconds": times,
        "median_cpu_seconds": {v: {k: statistics.median(x) for k, x in clocks.items()} for v, clocks in cpu.items()},
        "all_cpu_seconds": cpu,
        "ratios": {
            "ours_over_floor": med["ours"] / med["floor"],
            "ours_over_naive_time": med["ours"] / med["naive"],
            "ours_less_model_load_over_floor": med["ours_less_model_load"] / med["floor"],
            # each repeat runs the variants back to back: its ratio is less exposed to
            # changes in the load of a shared machine than the ratio of separate medians
            "ours_over_floor_per_repeat_median": statistics.median(per_repeat("ours", "floor")),
            "ours_less_model_load_over_floor_per_repeat_median": statistics.median(
                per_repeat("ours_less_model_load", "floor")
            ),
            # timeit's convention: noise on a shared machine only ever adds time
            "ours_over_floor_best": min(times["ours"]) / min(times["floor"]),
            "floor_again_over_floor": med["floor_again"] / med["floor"],
            "floor_again_over_floor_per_repeat_median": statistics.median(per_repeat("floor_again", "floor")),
            "floor_again_over_floor_per_repeat_quartiles": quartiles(per_repeat("floor_again", "floor")),
            "ours_over_floor_per_repeat_quartiles": quartiles(per_repeat("ours", "floor")),
            "ours_less_model_load_over_floor_per_repeat_quartiles": quartiles(
                per_repeat("ours_less_model_load", "floor")
            ),
            "ours_over_naive_time_per_repeat_median": statistics.median(per_repeat("ours", "naive")),
            "ours_over_naive_peak_memory": memory["ours"]["peak_mib"] / memory["naive"]["peak_mib"],
            "ours_over_naive_memory_above_baseline": (memory["ours"]["peak_mib"] - memory["ours"]["baseline_mib"])
            / max(1e-9, memory["naive"]["peak_mib"] - memory["naive"]["baseline_mib"]),
        },
        "peak_memory_mib": memory,
        "flat_memory": {
            "shape": args.memory_shape,
            "by_n": {str(n): v for n, v in flat.items()},
            "peak_ratio_largest_over_smallest": flat[max(flat)]["peak_mib"] / flat[min(flat)]["peak_mib"],
        },
        "margin_ours_vs_naive": margins,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return memory_worker(for_classes(args, args.k))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    by_classes = [measure(for_classes(args, k), device) for k in args.classes]
    shape = "x".join(map(str, args.shape))
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "load_average": os.getloadavg(),
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "out", "work", "name")},
        "by_classes": by_classes,
    }
    name = args.name or f"{device.type}-{args.n}x{shape}-{args.dtype}-{args.arch}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, name)
    (out / f"{name}.md").write_text(table)
    print(table)


def markdown(r: dict, name: str) -> str:
    c, machine = r["config"], r["machine"]
    lines = [
        f"# {name}",
        "",
        f"N = {c['n']}, sample shape {c['shape']} {c['dtype']}, {c['arch']}, batch {c['batch_size']}, device "
        f"{machine['device']}, torch threads {c['threads']} of {machine['cpu_count']} cores, {c['repeats']} "
        f"interleaved repeats per K; load average at the end {machine['load_average'][0]:.1f} "
        f"(1 min), {machine['load_average'][1]:.1f} (5 min).",
        "",
        "Per-repeat ratios (each repeat runs the variants back to back): median [quartiles].",
        "",
        "| K | d | floor, median s | ours less model loading / floor | ours / floor | A/A control: floor again / floor "
        "| ours / naive, time | peak RSS N = max / min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in r["by_classes"]:
        rat = k["ratios"]
        lines.append(
            f"| {k['k']} | {k['latent']} | {k['median_seconds']['floor']:.3f} "
            f"| **{_spread(rat, 'ours_less_model_load_over_floor')}** | {_spread(rat, 'ours_over_floor')} "
            f"| {_spread(rat, 'floor_again_over_floor')} | {rat['ours_over_naive_time_per_repeat_median']:.3f} "
            f"| {k['flat_memory']['peak_ratio_largest_over_smallest']:.3f} |"
        )
    lines.append("")
    for k in r["by_classes"]:
        lines += details(k, c)
    return "\n".join(lines)


def _spread(ratios: dict, key: str) -> str:
    """A per-repeat ratio as "median [first quartile – third quartile]"."""
    low, high = ratios[f"{key}_per_repeat_quartiles"]
    return f"{ratios[f'{key}_per_repeat_median']:.3f} [{low:.3f} – {high:.3f}]"


def details(r: dict, c: dict) -> list[str]:
    """The table of one K."""
    med, rat, mem, flat = r["median_seconds"], r["ratios"], r["peak_memory_mib"], r["flat_memory"]
    cpu = r["median_cpu_seconds"]
    lines = [
        f"## K = {r['k']}, d = {r['latent']}",
        "",
        f"The floor's posterior is within {r['floor_posterior_max_error']:.1e} of the definition's (4 batches).",
        "",
        "| variant | median s | ratio to floor | peak RSS MiB (above baseline) |",
        "| --- | --- | --- | --- |",
        f"| floor (forward passes only) | {med['floor']:.3f} | 1.00 | – |",
        f"| ours (`run_audit` end to end) | {med['ours']:.3f} | **{rat['ours_over_floor']:.3f}** | "
        f"{mem['ours']['peak_mib']:.0f} ({mem['ours']['peak_mib'] - mem['ours']['baseline_mib']:.0f}) |",
        f"| ours less its model and teacher loading (the issue's measure) | {med['ours_less_model_load']:.3f} | "
        f"**{rat['ours_less_model_load_over_floor']:.3f}** | – |",
        f"| ours + model diagnostics (1 run) | {med['ours_with_model_diagnostics']:.3f} | "
        f"{med['ours_with_model_diagnostics'] / med['floor']:.3f} | – |",
        f"| hashing the inputs alone (sha256; part of ours, on a worker thread) | {med['hashing_inputs_alone']:.3f} | "
        f"{med['hashing_inputs_alone'] / med['floor']:.3f} | – |",
        f"| naive (DataLoader → lists → §1) | {med['naive']:.3f} | {med['naive'] / med['floor']:.3f} | "
        f"{mem['naive']['peak_mib']:.0f} ({mem['naive']['peak_mib'] - mem['naive']['baseline_mib']:.0f}) |",
        "",
        f"Median of the per-repeat ratios (variants run back to back): ours / floor "
        f"**{rat['ours_over_floor_per_repeat_median']:.3f}**, ours / naive **{rat['ours_over_naive_time_per_repeat_median']:.3f}**. "
        f"Best of {c['repeats']} (timeit's convention): ours / floor **{rat['ours_over_floor_best']:.3f}**.",
        "",
        f"Per-repeat ours / floor, quartiles: {rat['ours_over_floor_per_repeat_quartiles'][0]:.3f} – "
        f"{rat['ours_over_floor_per_repeat_quartiles'][1]:.3f}; less model loading: median "
        f"**{rat['ours_less_model_load_over_floor_per_repeat_median']:.3f}**, quartiles "
        f"{rat['ours_less_model_load_over_floor_per_repeat_quartiles'][0]:.3f} – "
        f"{rat['ours_less_model_load_over_floor_per_repeat_quartiles'][1]:.3f}. A/A control (the floor timed twice per repeat): "
        f"ratio of medians **{rat['floor_again_over_floor']:.3f}**, per-repeat median "
        f"{rat['floor_again_over_floor_per_repeat_median']:.3f}, quartiles "
        f"{rat['floor_again_over_floor_per_repeat_quartiles'][0]:.3f} – {rat['floor_again_over_floor_per_repeat_quartiles'][1]:.3f}: "
        "how far apart two equal costs measure on this machine.",
        "",
        f"CPU seconds (medians): floor {cpu['floor']['main_thread']:.3f}; ours {cpu['ours']['main_thread']:.3f} "
        f"in the calling thread ({cpu['ours']['main_thread'] / cpu['floor']['main_thread']:.3f} × the floor's), "
        f"{cpu['ours']['process']:.3f} in the whole process (reader, update and hashing threads included); "
        f"naive {cpu['naive']['process']:.3f}.",
        "",
        f"ours / naive: time **{rat['ours_over_naive_time']:.3f}**, peak RSS **{rat['ours_over_naive_peak_memory']:.3f}**, "
        f"peak above baseline **{rat['ours_over_naive_memory_above_baseline']:.3f}**.",
        "",
        f"Flat memory (ours, sample shape {flat['shape']}, fresh process per N):",
        "",
        "| N | peak RSS MiB | baseline MiB |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {n} | {v['peak_mib']:.0f} | {v['baseline_mib']:.0f} |" for n, v in flat["by_n"].items()]
    lines += ["", f"peak ratio largest N / smallest N: **{flat['peak_ratio_largest_over_smallest']:.3f}**", ""]
    return lines


if __name__ == "__main__":
    main()
