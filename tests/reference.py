"""An independent plain-numpy reading of docs/mathematics.md (and of the state-dict digest of
docs/formats.md), written from the formulas, not from our code.

Tests compare the package's numbers with these. Nothing here imports ``auditor``.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct

import numpy as np
from scipy.stats import norm


def helmert_simplex(K: int) -> np.ndarray:
    V = np.zeros((K - 1, K))
    for j in range(1, K):
        for m in range(1, K + 1):
            if m <= j:
                V[j - 1, m - 1] = 1 / math.sqrt(j * (j + 1))
            elif m == j + 1:
                V[j - 1, m - 1] = -j / math.sqrt(j * (j + 1))
    return math.sqrt(K / (K - 1)) * V


def witness_S(K: int, d: int, offset: int = 0) -> np.ndarray:
    S = np.zeros((d, K))
    S[offset : offset + K - 1] = helmert_simplex(K)
    return S


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def entropy_rows(p: np.ndarray) -> np.ndarray:
    out = np.zeros(len(p))
    for i, row in enumerate(p):
        nz = row[row > 0]
        out[i] = -(nz * np.log(nz)).sum()
    return out


def certificate(mu, p, K, beta, offset=0, confidence=0.95):
    """Ĝ, I_T, L, LCB straight from the definitions (per-sample, then averages)."""
    mu, p = np.asarray(mu, float), np.asarray(p, float)
    N, d = mu.shape
    S = witness_S(K, d, offset)
    z = beta * mu @ S
    q = softmax(z)
    ce = -(p * np.log(q)).sum(axis=1)
    h = entropy_rows(p)
    p_bar = p.mean(axis=0)
    H_bar = entropy_rows(p_bar[None])[0]
    I_T = H_bar - h.mean()
    L = (ce - h).mean()
    G = H_bar - ce.mean()
    log_pbar = np.where(p_bar > 0, np.log(np.where(p_bar > 0, p_bar, 1)), 0.0)
    psi = -((p - p_bar) @ log_pbar) - (ce - ce.mean())
    var = (psi**2).sum() / (N - 1) if N > 1 else float("nan")
    z_conf = norm.ppf(confidence) if confidence > 0 else 0.0
    lcb = G - z_conf * math.sqrt(var / N)
    return {
        "margin": G,
        "teacher_information": I_T,
        "alignment_loss": L,
        "margin_lcb": lcb,
        "q": q,
        "z": z,
        "ce": ce,
        "h": h,
        "p_bar": p_bar,
    }


def view_gap(mu, p, p_view, K, beta, offset=0):
    base = certificate(mu, p, K, beta, offset)
    view = certificate(mu, p_view, K, beta, offset)
    z = base["z"]
    tv = 0.5 * np.abs(p - p_view).sum(axis=1)
    H = lambda v: entropy_rows(v[None])[0]  # noqa: E731
    bound = abs(H(p_view.mean(0)) - H(p.mean(0))) + (tv * (z.max(1) - z.min(1))).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - np.log(p_view)), 0.0).sum(axis=1)
    return {
        "bound": bound,
        "margin_encoder_view": view["margin"],
        "margin": base["margin"],
        "mean_kl": kl.mean(),
        "mean_tv": tv.mean(),
    }


def diagnostics(mu, logvar=None):
    mu = np.asarray(mu, float)
    out = {
        "max_abs_deviation_from_mean": np.abs(mu - mu.mean(0)).max(),
        "active_units": int((mu.var(axis=0) > 0.01).sum()),
        "mean_sq_norm": (mu**2).sum(axis=1).mean(),
    }
    if logvar is not None:
        out["mean_prior_kl"] = (0.5 * (mu**2 + np.exp(logvar) - logvar - 1)).sum(axis=1).mean()
    return out


def pca_gmm_probs(x, t):
    """Teacher posterior from a teacher.pt dict (numpy arrays), straight from docs/formats.md."""
    y = (x.reshape(len(x), -1) - t["pca_mean"]) @ t["pca_components"].T
    logn = -0.5 * (
        np.log(2 * np.pi * t["variances"])[None] + (y[:, None, :] - t["means"][None]) ** 2 / t["variances"][None]
    ).sum(2)
    return softmax((t["log_weights"][None] + logn) / t["temperature"])


# --------------------------------------------------------------- the state-dict digest (docs/formats.md)
SAFETENSORS_DTYPES = {
    "F32": "float32",
    "F64": "float64",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "BOOL": "bool",
}


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def digest_of_entries(entries) -> str:
    """The documented scheme over (name, dtype name, shape, little-endian C-order bytes), sorted by name."""
    h = hashlib.sha256(b"vae-audit state-dict digest v1\x00" + u64(len(entries)))
    for name, dtype, shape, raw in sorted(entries, key=lambda e: e[0]):
        h.update(u64(len(name.encode())) + name.encode() + u64(len(dtype)) + dtype.encode())
        h.update(u64(len(shape)) + b"".join(u64(s) for s in shape) + u64(len(raw)) + raw)
    return h.hexdigest()


def safetensors_file_digest(path, select=lambda name: True) -> str:
    """The same digest from a safetensors file's bytes alone: it stores tensors little-endian in C order."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    header.pop("__metadata__", None)
    data = raw[8 + size :]
    return digest_of_entries(
        [
            (name, SAFETENSORS_DTYPES[e["dtype"]], e["shape"], data[e["data_offsets"][0] : e["data_offsets"][1]])
            for name, e in header.items()
            if select(name)
        ]
    )
