"""A whole data set as the teacher sees it: every sample as [0, 1] floats, and the teacher's
probabilities on them — for fitting, searching and designing teachers (small data held in memory)."""

from __future__ import annotations

import numpy as np
import torch

from ...errors import AuditInputError
from .dataset import Dataset, to_unit_float


def dataset_features(dataset: Dataset) -> np.ndarray:
    """All samples of ``dataset`` as an N×D float64 matrix of the audit pass's [0, 1] inputs."""
    return unit_features(dataset.read(0, dataset.num_samples), dataset.spec)


def unit_features(samples: np.ndarray, spec: str) -> np.ndarray:
    """Samples in their stored dtype as an N×D float64 matrix of the audit pass's [0, 1] inputs."""
    unit = to_unit_float(torch.from_numpy(np.ascontiguousarray(samples)))
    x = unit.reshape(unit.shape[0], -1).to(torch.float64).numpy()
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise AuditInputError(f"data set {spec!r} contains NaN or inf in {bad} samples")
    return x


@torch.no_grad()
def dataset_probabilities(teacher: torch.nn.Module, dataset: Dataset, batch_size: int = 4096) -> np.ndarray:
    """T(·|x) on every sample of ``dataset``, fed exactly as the audit pass feeds it: the stored
    sample shape, converted by :func:`to_unit_float` (so a torch.export teacher sees float32)."""
    rows = []
    for start in range(0, dataset.num_samples, batch_size):
        x = to_unit_float(torch.from_numpy(dataset.read(start, start + batch_size)))
        rows.append(teacher(x).to(torch.float64))
    p = torch.cat(rows).numpy()
    if not np.isfinite(p).all():
        raise AuditInputError(
            f"the teacher's probabilities on {dataset.spec!r} contain NaN or inf (non-finite inputs?)"
        )
    return p
