"""Tiny models, teachers and data in the documented formats, written with plain torch/safetensors
calls (never through auditor's writers), plus a numpy forward pass of the reference `mlp`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

D, HIDDEN, LATENT, K, BETA = 64, 8, 4, 3, 2.0


def mlp_tensors(seed: int = 0, scale: float = 0.5, zero_mu: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {
        "encoder.0.weight": torch.randn(HIDDEN, D, generator=g) * scale,
        "encoder.0.bias": torch.randn(HIDDEN, generator=g) * 0.1,
        "encoder.1.weight": torch.randn(2 * LATENT, HIDDEN, generator=g) * scale,
        "encoder.1.bias": torch.randn(2 * LATENT, generator=g) * 0.1,
        "decoder.0.weight": torch.randn(HIDDEN, LATENT, generator=g) * scale,
        "decoder.0.bias": torch.zeros(HIDDEN),
        "decoder.1.weight": torch.randn(D, HIDDEN, generator=g) * scale,
        "decoder.1.bias": torch.zeros(D),
    }
    if zero_mu:  # μ(x) = bias for every x: exact constant collapse
        t["encoder.1.weight"][:LATENT] = 0.0
    return t


ARCH = {
    "name": "mlp",
    "input_shape": [D],
    "hidden": [HIDDEN],
    "latent_dim": LATENT,
    "activation": "relu",
    "likelihood": "bernoulli",
}
WITNESS = {"num_classes": K, "beta": BETA, "offset": 0}


def write_model(path: Path, tensors=None, arch=ARCH, witness=WITNESS, metadata=None) -> Path:
    meta = {
        "vae_audit.format": "1",
        "vae_audit.architecture": json.dumps(arch),
        "vae_audit.witness": json.dumps(witness),
    }
    if metadata is not None:
        meta = metadata
    save_file(tensors if tensors is not None else mlp_tensors(), str(path), metadata=meta)
    return path


def numpy_encoder_mu(tensors: dict[str, torch.Tensor], x: np.ndarray) -> np.ndarray:
    w = {k: v.numpy().astype(np.float64) for k, v in tensors.items()}
    h = np.maximum(x @ w["encoder.0.weight"].T + w["encoder.0.bias"], 0)
    out = h @ w["encoder.1.weight"].T + w["encoder.1.bias"]
    return out[:, :LATENT], out[:, LATENT:]


def teacher_arrays(seed: int = 1, k: int = K, d: int = D, r: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "pca_mean": rng.uniform(0, 1, d),
        "pca_components": np.linalg.qr(rng.normal(size=(d, r)))[0].T,
        "log_weights": np.log(np.full(k, 1.0 / k)),
        "means": rng.normal(scale=0.8, size=(k, r)),
        "variances": rng.uniform(0.3, 1.0, size=(k, r)),
        "temperature": 1.0,
    }


def write_teacher(path: Path, arrays: dict | None = None, **overrides) -> Path:
    arrays = arrays or teacher_arrays()
    obj = {"format": "vae-audit-teacher/1", "kind": "pca-gmm"}
    obj.update({k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in arrays.items()})
    obj.update(overrides)
    torch.save(obj, path)
    return path


def data_x(n: int = 60, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(n, D)).astype(np.float32)
