"""Small plans for the device-pass tests: a random `mlp` encoder, a random pca-gmm teacher and
random inputs, in memory or written in the documented file formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from auditor.audit.plan import PassPlan
from auditor.certificate.state import CertificateState
from auditor.certificate.witness import WitnessSpec
from auditor.nets.registry import build_model
from auditor.sources.arrays import InMemoryArray
from auditor.sources.checkpoint import save_checkpoint
from auditor.teachers.pca_gmm import teacher_from_dict

D, LATENT, K, BETA = 12, 4, 3, 1.5
ARCH = {
    "name": "mlp",
    "input_shape": [D],
    "hidden": [16],
    "latent_dim": LATENT,
    "activation": "tanh",
    "likelihood": "bernoulli",
}
WITNESS = {"num_classes": K, "beta": BETA, "offset": 0}
SPEC = WitnessSpec(K, LATENT, BETA, 0)


def encoder(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ARCH).eval()


def teacher_dict(seed: int = 1, r: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "format": "vae-audit-teacher/1",
        "kind": "pca-gmm",
        "pca_mean": torch.tensor(rng.uniform(0, 1, D)),
        "pca_components": torch.tensor(np.linalg.qr(rng.normal(size=(D, r)))[0].T.copy()),
        "log_weights": torch.tensor(np.log(np.full(K, 1.0 / K))),
        "means": torch.tensor(rng.normal(scale=0.3, size=(K, r))),
        "variances": torch.tensor(rng.uniform(0.05, 0.2, size=(K, r))),
        "temperature": 1.0,
    }


def teacher(seed: int = 1):
    return teacher_from_dict(teacher_dict(seed)).eval()


def inputs(n: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(n, D)).astype(np.float32)


def plan(x: np.ndarray, enc=None, with_view: bool = False) -> PassPlan:
    return PassPlan(
        {"x": InMemoryArray(x)}, encoder=enc if enc is not None else encoder(), teacher=teacher(), with_view=with_view
    )


def fresh_state(with_view: bool = False) -> CertificateState:
    return CertificateState(SPEC, with_view=with_view)


def write_inputs(folder: Path, x: np.ndarray) -> dict[str, Path]:
    """model.safetensors, teacher.pt and data.npy in the documented formats."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"model": folder / "model.safetensors", "teacher": folder / "teacher.pt", "data": folder / "data.npy"}
    save_checkpoint(paths["model"], encoder(), ARCH, WITNESS, {"method": "random"})
    torch.save(teacher_dict(), paths["teacher"])
    np.save(paths["data"], x)
    return paths


def assert_states_equal(a: CertificateState, b: CertificateState) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
