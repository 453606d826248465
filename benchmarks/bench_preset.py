"""How long a preset takes: epochs per minute of its rows on synthetic data of its shape, and what a
full table would take.

    python benchmarks/bench_preset.py --device cuda                         # cifar100, 50,000 images
    python benchmarks/bench_preset.py --device cuda --precision bf16
    python benchmarks/bench_preset.py --preset mnist --n 60000 --device cuda

It writes a synthetic data set in the preset's own layout (CIFAR-100 binary, or MNIST IDX; N
training and N/5 test images around 10 random centres), then, with the preset's settings:

1. searches one teacher exactly as the preset does (its grid, on the whole training split), timed;
2. trains the ``aligned`` row for ``--epochs`` epochs, timing every epoch (training steps and the
   monitor pass over the training data); the first epoch includes warm-up and is reported apart;
3. certifies the checkpoint on the test split as the table does (certificate, reconstruction,
   post-hoc probe), timed.

The estimate of a full table is an upper bound: seeds × (one search per seed when the preset
searches per seed, else once) + seeds × rows × epochs × seconds per epoch + seeds × rows ×
certification, with every protocol row running to its maximum epochs (they stop earlier) and
every method costing what ``aligned`` costs (prefit adds its prefit epochs). Results are printed
and written to ``<out>/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import write_results  # noqa: E402

from auditor.training.device import training_device  # noqa: E402
from auditor.training.presets.base import apply_overrides  # noqa: E402
from auditor.training.presets.registry import PRESETS  # noqa: E402
from auditor.training.presets.run import search_teacher, teacher_fit_rows  # noqa: E402
from auditor.training.reproduce import Row, RunOptions, TeacherRun, run_row, teacher_on_test  # noqa: E402
from auditor.training.run import load_training_data, read_split  # noqa: E402

LAYOUTS = {"cifar100": "CIFAR-100 binary", "mnist": "MNIST IDX"}


def write_data(folder: Path, preset: str, n: int, seed: int = 0) -> None:
    """N training and N/5 test images around 10 centres, in the preset's layout."""
    rng = np.random.default_rng(seed)
    shape = PRESETS[preset].sample_shape
    # Overlapping clusters, as real images are, so that teachers of the preset's grid fit its budget.
    centres = 0.5 + 0.02 * rng.normal(size=(10, *shape))
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("test", max(10, n // 5))):
        labels = rng.integers(0, 10, count)
        images = np.empty((count, *shape), np.uint8)
        for begin in range(0, count, 5000):  # in chunks: bounded memory for 50,000 images
            end = min(count, begin + 5000)
            noisy = centres[labels[begin:end]] + rng.normal(0, 0.2, size=(end - begin, *shape))
            images[begin:end] = np.clip(np.round(noisy * 255), 0, 255)
        if preset == "cifar100":
            records = np.concatenate([labels[:, None] % 20, labels[:, None], images.reshape(count, -1)], axis=1)
            (folder / f"{split}.bin").write_bytes(records.astype(np.uint8).tobytes())
        else:
            prefix = "train" if split == "train" else "t10k"
            header = np.array([0x0803, count, *shape[1:]], ">u4").tobytes()
            (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
            labels_header = np.array([0x0801, count], ">u4").tobytes()
            (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(labels_header + labels.astype(np.uint8).tobytes())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(LAYOUTS), default="cifar100")
    parser.add_argument("--n", type=int, default=50_000, help="training images (test: n/5)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="as audit reproduce --set")
    parser.add_argument("--work", default=None, help="folder for the data and the run (default: a temporary one)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    preset, _ = apply_overrides(PRESETS[args.preset], args.overrides)
    with tempfile.TemporaryDirectory(prefix="vae-audit-bench-preset-") as scratch:
        work = Path(args.work or scratch)
        data = work / "data"
        write_data(data, args.preset, args.n)
        dataset, x_train = read_split(str(data), "train")
        options = RunOptions(
            epochs=args.epochs, settings=preset.settings, device=args.device, precision=args.precision, probe=True
        )
        start = time.perf_counter()
        rows, where = teacher_fit_rows(preset, 0, dataset.num_samples)
        beta = float(preset.settings.get("beta", 2.0))
        teacher_path = search_teacher(x_train, dataset, rows, where, preset.search, 0, beta, work / "teacher.pt", False)
        search_seconds = time.perf_counter() - start
        inputs = load_training_data(str(data), "train", teacher_path, samples=(dataset, x_train))
        test_dataset, x_test = read_split(str(data), "test")
        teacher = TeacherRun(teacher_path, inputs, teacher_on_test(teacher_path, x_test, test_dataset.sample_shape))
        stamps: list[float] = []
        start = time.perf_counter()
        record = run_row(
            Row("aligned", "aligned"),
            0,
            teacher,
            str(data),
            x_test,
            work / "aligned.safetensors",
            None,
            options,
            on_epoch=lambda row: stamps.append(time.perf_counter()),
        )
        total_seconds = time.perf_counter() - start
    epoch_seconds = [b - a for a, b in zip(stamps, stamps[1:])]  # stamps[0]: the monitor before epoch 1
    steady = epoch_seconds[1:] or epoch_seconds
    certify_seconds = total_seconds - (stamps[-1] - start)
    per_epoch = statistics.median(steady)
    seeds, table_rows = len(preset.seeds), len(preset.rows)
    searches = seeds if preset.teachers == "per-seed" else preset.num_teachers
    prefit = sum(1 for row in preset.rows if row.method == "prefit") * int(preset.settings.get("prefit_epochs", 10))
    full = (
        searches * search_seconds
        + seeds * (table_rows * preset.epochs + prefit) * per_epoch
        + seeds * table_rows * certify_seconds
    )
    device = training_device(args.device)
    results = {
        "machine": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "load_average": os.getloadavg(),
        },
        "config": {
            **vars(args),
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in preset.settings.items()},
        },
        "search_seconds": search_seconds,
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch": per_epoch,
        "epochs_per_minute": 60 / per_epoch,
        "certify_seconds": certify_seconds,
        "full_table_upper_bound_hours": full / 3600,
        "full_table": {"seeds": seeds, "rows": table_rows, "epochs": preset.epochs, "searches": searches},
        "aligned_row": {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))},
    }
    name = args.name or f"preset-{args.preset}-{results['machine']['device'].replace(' ', '_')}-{args.precision}"
    table = "\n".join(
        [
            f"# {name}",
            "",
            f"`{args.preset}` preset settings, synthetic {LAYOUTS[args.preset]} data of {args.n} training images, "
            f"{args.epochs} epochs of the `aligned` row, {args.precision}, device {results['machine']['device']}.",
            "",
            f"- teacher search (the preset's grid, whole training split): {search_seconds:.1f} s",
            f"- one epoch (steps and the monitor pass): {per_epoch:.2f} s → **{60 / per_epoch:.1f} epochs per minute** "
            f"(first epoch, with warm-up: {epoch_seconds[0]:.2f} s)",
            f"- certifying one checkpoint (certificate, reconstruction, probe): {certify_seconds:.1f} s",
            f"- a full table ({seeds} seeds × {table_rows} rows × up to {preset.epochs} epochs, {searches} searches): "
            f"at most **{full / 3600:.1f} hours** on this device",
            "",
        ]
    )
    write_results(Path(args.out), name, results, table)
    return results


if __name__ == "__main__":
    main()
