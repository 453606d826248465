"""Benchmark of loading a diffusers VAE folder: diffusers' own load, our loader, and the digest, in one run.

    python benchmarks/bench_model_load.py                  # an SD-sized AutoencoderKL (83 M parameters)
    python benchmarks/bench_model_load.py --size tiny      # a small one, for a quick look

It writes an ``AutoencoderKL`` with random weights under ``build/bench/`` (``save_pretrained``)
and measures, repeated ``--repeats`` times and interleaved:

- floor: ``AutoencoderKL.from_pretrained(folder, use_safetensors=True, local_files_only=True)``,
  diffusers' own offline load, written without our modules;
- ours: :class:`DiffusersFolder` ``.open`` — the same load, plus its strictness check, the
  state-dict digest of the encoder's tensors and the sha256 of every file it read, hashed on the
  calling thread; and the same with the files hashed on a worker thread, as an audit does (the
  hashing then overlaps the audit pass; here it is cancelled once the model is loaded);
- digest alone: ``state_dict_digest`` of the encoder's tensors, against hashlib's sha256 over the
  same tensors' bytes (the least any digest of them costs).

It prints medians and the ratios of ours (both ways) to the floor and of the digest to sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from auditor.audit.request import AuditRequest  # noqa: E402
from auditor.sources.hashing import hashing_in_background  # noqa: E402
from auditor.sources.models.diffusers_folder import DiffusersFolder  # noqa: E402
from auditor.sources.models.digest import state_dict_digest  # noqa: E402

SIZES = {
    "sd": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32},
    "tiny": {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 8},
}


def write_model(folder: Path, size: str) -> None:
    import safetensors.torch  # noqa: F401  (older diffusers need it imported)
    from diffusers import AutoencoderKL

    if (folder / "config.json").is_file():
        return
    n = len(SIZES[size]["block_out_channels"])
    torch.manual_seed(0)
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=4,
        **SIZES[size],
    ).save_pretrained(folder)


def open_hashing_in_background(request: AuditRequest) -> None:
    with hashing_in_background():
        DiffusersFolder().open(request)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="sd")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = args.out / f"autoencoder-kl-{args.size}"
    write_model(folder, args.size)
    from diffusers import AutoencoderKL

    request = AuditRequest(model=folder)
    encoder = DiffusersFolder().open(request)
    tensors = {
        k: v for k, v in encoder.module.state_dict().items() if k.startswith(("vae.encoder.", "vae.quant_conv."))
    }

    def plain_sha256() -> None:
        h = hashlib.sha256()
        for name in sorted(tensors):
            h.update(tensors[name].contiguous().numpy().tobytes())

    variants = {
        "floor: diffusers from_pretrained": lambda: AutoencoderKL.from_pretrained(
            str(folder), use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False
        ),
        "ours: DiffusersFolder.open": lambda: DiffusersFolder().open(request),
        "ours, files hashed in the background": lambda: open_hashing_in_background(request),
        "sha256 of the encoder's bytes": plain_sha256,
        "state_dict_digest of the encoder": lambda: state_dict_digest(tensors),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        order = list(variants)[repeat % len(variants) :] + list(variants)[: repeat % len(variants)]
        for name in order:
            times[name].append(timed(variants[name]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    megabytes = sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20
    print(f"AutoencoderKL '{args.size}': encoder tensors {megabytes:.1f} MiB; medians of {args.repeats} repeats")
    for name, value in medians.items():
        print(f"  {name:36} {value:8.3f} s")
    floor, ours, background, sha256, digest = medians.values()
    ratios = {
        "ours / floor": ours / floor,
        "ours in the background / floor": background / floor,
        "digest / sha256": digest / sha256,
    }
    for name, value in ratios.items():
        print(f"  {name:36} {value:8.2f}")
    return {"medians": medians, "ratios": ratios}


if __name__ == "__main__":
    main()
