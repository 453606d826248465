"""Benchmark of `audit train`'s loop: images per second against a plain PyTorch loop of the same
model, loss and batch on the same device, side by side in one run.

    python benchmarks/bench_train.py                                   # CPU: CIFAR-shaped, the defaults
    python benchmarks/bench_train.py --device cuda --n 50000 --threads 8 --name cuda-cifar100
    python benchmarks/bench_train.py --device cuda --n 50000 --precision bf16 --threads 8

Both loops start from the same weights (one ``conv`` or ``mlp`` reference model, built once and
copied) and train on the same uint8 samples (N images around K random centres, held in memory as
``audit train`` holds its split) against the same fixed teacher probabilities, for ``--epochs``
epochs each, interleaved (ours, plain / plain, ours, …) and repeated ``--repeats`` times:

- ours: ``auditor.training.trainer.train_model``, method ``aligned`` (the ELBO plus the raw witness
  alignment), with its input path (gathering, pinning and copying ahead), its loss sums on the
  device and its per-epoch monitor (an audit pass over the training data into the certificate
  state), including the monitor before the first epoch;
- plain: written here with torch alone (no module of this package but the model): per batch
  ``x[idx]`` to the device, scaled, encoded, reparameterised, decoded, Bernoulli reconstruction,
  KL to N(0, I), the alignment KL(p ‖ softmax(β Sᵀμ)) with S built here from the Helmert formula,
  Adam; per epoch (and before the first) a monitor pass over the training data that computes the
  margin Ĝ = H(p̄) − mean CE(p, q) in float64: the least a monitor can do.

The same batch order and noise are drawn in both (one CPU generator seeded alike), so on a CPU the
two train the same model: the benchmark reports how far apart their final weights are. Images per
second count training images (N × epochs) over the whole time, monitors included. Results are
printed and written to ``<out>/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_certify import helmert_witness  # noqa: E402  # the witness written from its formula, not the package's

from auditor.nets.registry import build_model  # noqa: E402
from auditor.training.config import TrainConfig  # noqa: E402
from auditor.training.trainer import train_model  # noqa: E402

BETA, ALIGN_WEIGHT, KL_WEIGHT = 2.0, 10.0, 1.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="training samples")
    parser.add_argument("--shape", default="3,32,32", help="sample shape, e.g. 3,32,32 or 784")
    parser.add_argument("--arch", choices=("conv", "mlp"), default="conv")
    parser.add_argument("--channels", default="32,64,128", help="conv channels (the cifar100 preset's)")
    parser.add_argument("--hidden", default="512,256", help="mlp hidden sizes (the mnist preset's)")
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--k", type=int, default=10, help="teacher classes")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both loops)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    args.shape = tuple(int(v) for v in args.shape.split(","))
    args.channels = tuple(int(v) for v in args.channels.split(","))
    args.hidden = tuple(int(v) for v in args.hidden.split(","))
    return args


def synthetic(args) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 samples around K centres, and teacher probabilities that follow the centres (float64)."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.2, 0.8, size=(args.k, *args.shape))
    labels = rng.integers(0, args.k, args.n)
    x = np.clip(np.round((centres[labels] + rng.normal(0, 0.15, (args.n, *args.shape))) * 255), 0, 255)
    logits = rng.normal(0, 1, (args.n, args.k))
    logits[np.arange(args.n), labels] += 3.0
    p = np.exp(logits - logits.max(1, keepdims=True))
    return torch.from_numpy(x.astype(np.uint8)), torch.from_numpy(p / p.sum(1, keepdims=True))


def architecture(args) -> dict:
    common = {
        "input_shape": list(args.shape),
        "latent_dim": args.latent,
        "activation": "relu",
        "likelihood": "bernoulli",
    }
    if args.arch == "conv":
        return {"name": "conv", "channels": list(args.channels), **common}
    return {"name": "mlp", "hidden": list(args.hidden), **common}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- the plain loop
@torch.no_grad()
def plain_margin(model, x, p, S64, device, batch: int = 1024) -> float:
    """Ĝ = H(p̄) − (1/N) Σ CE(p_i, softmax(β Sᵀμ_i)) in float64 (S64: the witness in float64), eval-mode means."""
    model.eval()
    ce_sum, p_sum = 0.0, torch.zeros(p.shape[1], dtype=torch.float64, device=device)
    for b in range(0, len(x), batch):
        xb = x[b : b + batch].to(device).float().div_(255)
        mu = model.encode(xb)[0].double()
        pb = p[b : b + batch].to(device)
        ce_sum += float(-(pb * torch.log_softmax(BETA * mu @ S64, dim=1)).sum())
        p_sum += pb.sum(0)
    model.train()
    p_bar = p_sum / len(x)
    return float(-(p_bar * torch.log(p_bar.clamp_min(1e-300))).sum()) - ce_sum / len(x)


def plain_loop(model, x, p, args, device) -> float:
    S64 = torch.as_tensor(helmert_witness(args.k, args.latent), dtype=torch.float64, device=device)
    S = S64.float()
    p32 = p.float()
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    margin = plain_margin(model, x, p, S64, device)
    model.train()
    for _ in range(args.epochs):
        for idx in torch.randperm(len(x), generator=generator).split(args.batch_size):
            xb = x[idx].to(device, non_blocking=True).float().div_(255)
            pb = p32[idx].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                mu, logvar = model.encode(xb)
            mu, logvar = mu.float(), logvar.float()
            noise = torch.randn(mu.shape, generator=generator).to(device)
            z = mu + noise * (0.5 * logvar).exp()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model.decode(z).reshape(len(idx), -1)
            recon = F.binary_cross_entropy_with_logits(logits.float(), xb.reshape(len(idx), -1), reduction="none")
            kl = (0.5 * (mu * mu + logvar.exp() - logvar - 1)).mean(0).sum()
            logq = torch.log_softmax(BETA * (mu @ S), dim=1)
            align = (torch.special.xlogy(pb, pb) - pb * logq).sum(1).mean()
            loss = recon.sum(1).mean() + KL_WEIGHT * kl + ALIGN_WEIGHT * align
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        margin = plain_margin(model, x, p, S64, device)
    sync(device)
    return margin


# ---------------------------------------------------------------------------- ours
def ours_loop(x, p, args, device):
    cfg = TrainConfig(
        method="aligned",
        seed=0,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=2e-3,
        kl_weight=KL_WEIGHT,
        align_weight=ALIGN_WEIGHT,
        beta=BETA,
        latent_dim=args.latent,
        arch=args.arch,
        channels=args.channels if args.arch == "conv" else None,
        hidden=args.hidden if args.arch == "mlp" else None,
        threads=args.threads,
        device=device.type,
        precision=args.precision,
    )
    result = train_model(cfg, x, p, device=device)
    sync(device)
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    x, p = synthetic(args)
    arch = architecture(args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # what train_model's fresh_model draws for seed 0
        initial = {k: v.clone() for k, v in build_model(arch).state_dict().items()}
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    # CPU seconds of the calling thread (the forward and backward passes, and what each loop adds
    # to them there): far less exposed than wall time to other processes on a shared machine.
    thread_cpu: dict[str, list[float]] = {"ours": [], "plain": []}
    # CPU seconds of the whole process: ours also runs its reader and monitor-update threads.
    process_cpu: dict[str, list[float]] = {"ours": [], "plain": []}
    margins: dict[str, float] = {}
    weights: dict[str, dict] = {}
    ours_loop(
        x[: 2 * args.batch_size], p[: 2 * args.batch_size], argparse.Namespace(**{**vars(args), "epochs": 1}), device
    )
    for repeat in range(args.repeats):
        for variant in ("ours", "plain") if repeat % 2 == 0 else ("plain", "ours"):
            if variant == "plain":
                model = build_model(arch)
                model.load_state_dict(initial)
                model.to(device)
                start, start_cpu, start_process = time.perf_counter(), time.thread_time(), time.process_time()
                margins["plain"] = plain_loop(model, x, p, args, device)
                times["plain"].append(time.perf_counter() - start)
                thread_cpu["plain"].append(time.thread_time() - start_cpu)
                process_cpu["plain"].append(time.process_time() - start_process)
                weights["plain"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            else:
                start, start_cpu, start_process = time.perf_counter(), time.thread_time(), time.process_time()
                result = ours_loop(x, p, args, device)
                times["ours"].append(time.perf_counter() - start)
                thread_cpu["ours"].append(time.thread_time() - start_cpu)
                process_cpu["ours"].append(time.process_time() - start_process)
                margins["ours"] = result.history[-1]["margin"]
                weights["ours"] = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
            print(f"repeat {repeat + 1}/{args.repeats} {variant}: {times[variant][-1]:.3f} s", file=sys.stderr)
    images = args.n * args.epochs
    per_repeat = [plain / ours for plain, ours in zip(times["plain"], times["ours"])]
    med = {k: statistics.median(v) for k, v in times.items()}
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "load_average": os.getloadavg(),
        },
        "config": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k not in ("out", "name")
        },
        "all_seconds": times,
        "median_seconds": med,
        "all_thread_cpu_seconds": thread_cpu,
        "median_thread_cpu_seconds": {k: statistics.median(v) for k, v in thread_cpu.items()},
        "all_process_cpu_seconds": process_cpu,
        "median_process_cpu_seconds": {k: statistics.median(v) for k, v in process_cpu.items()},
        "images_per_second": {k: images / v for k, v in med.items()},
        "ratios": {
            # images per second of ours over the plain loop's: above 1 is faster
            "ours_over_plain_throughput": med["plain"] / med["ours"],
            "ours_over_plain_throughput_per_repeat_median": statistics.median(per_repeat),
            "ours_over_plain_throughput_per_repeat_quartiles": statistics.quantiles(
                per_repeat, n=4, method="inclusive"
            )[::2]
            if len(per_repeat) > 1
            else per_repeat * 2,
            "ours_over_plain_throughput_best": min(times["plain"]) / min(times["ours"]),
            # the same from the calling thread's CPU seconds
            "ours_over_plain_thread_cpu_throughput": statistics.median(thread_cpu["plain"])
            / statistics.median(thread_cpu["ours"]),
        },
        "final_margin": margins,
        "max_abs_weight_difference": max(
            float((weights["ours"][k] - weights["plain"][k]).abs().max()) for k in weights["ours"]
        ),
    }
    name = args.name or f"train-{device.type}-{args.n}x{'x'.join(map(str, args.shape))}-{args.arch}-{args.precision}"
    write_results(Path(args.out), name, results, markdown(results, name))
    return results


def write_results(out: Path, name: str, results: dict, table: str) -> None:
    """``<out>/<name>.json`` and ``<out>/<name>.md``, and the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(table)
    print(table)


def markdown(r: dict, name: str) -> str:
    c, m, rat = r["config"], r["machine"], r["ratios"]
    q = rat["ours_over_plain_throughput_per_repeat_quartiles"]
    return "\n".join(
        [
            f"# {name}",
            "",
            f"{c['n']} samples of {'×'.join(map(str, c['shape']))} uint8, `{c['arch']}`, batch {c['batch_size']}, "
            f"{c['epochs']} epoch(s) per run, {c['precision']}, {c['repeats']} interleaved repeats; device "
            f"{m['device']}, {m['cpu_count']} CPUs ({m['processor']}), torch {m['torch']} with {m['torch_threads']} "
            f"intra-op thread(s); load average at the end {', '.join(f'{v:.1f}' for v in m['load_average'])}.",
            "",
            "| | ours (`train_model`) | plain loop |",
            "| --- | --- | --- |",
            f"| median seconds per run | {r['median_seconds']['ours']:.3f} | {r['median_seconds']['plain']:.3f} |",
            f"| images per second | {r['images_per_second']['ours']:.1f} | {r['images_per_second']['plain']:.1f} |",
            f"| median CPU seconds of the calling thread | {r['median_thread_cpu_seconds']['ours']:.3f} | "
            f"{r['median_thread_cpu_seconds']['plain']:.3f} |",
            f"| median CPU seconds of the process (all threads) | {r['median_process_cpu_seconds']['ours']:.3f} | "
            f"{r['median_process_cpu_seconds']['plain']:.3f} |",
            f"| final training-data margin | {r['final_margin']['ours']:.6f} | {r['final_margin']['plain']:.6f} |",
            "",
            f"- **ours / plain throughput**: ratio of medians {rat['ours_over_plain_throughput']:.3f}; median of "
            f"per-repeat ratios {rat['ours_over_plain_throughput_per_repeat_median']:.3f} (quartiles {q[0]:.3f}–{q[1]:.3f}); "
            f"best runs {rat['ours_over_plain_throughput_best']:.3f} (target ≥ 0.90); from the calling thread's CPU "
            f"seconds {rat['ours_over_plain_thread_cpu_throughput']:.3f}",
            f"- largest difference between the two loops' final weights: {r['max_abs_weight_difference']:.3g}",
            "",
        ]
    )


if __name__ == "__main__":
    main()
