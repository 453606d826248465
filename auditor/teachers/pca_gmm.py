"""Teachers: the frozen posterior T(·|x) that the certificate measures the witness against.

Three sources (DESIGN §3):
- ``teacher.pt`` of kind ``pca-gmm``, loaded with ``torch.load(weights_only=True)`` only, so a
  file of arbitrary pickled objects is refused before anything in it runs;
- a torch.export program (``.pt2``) mapping x to logits. Loading one unpickles it, which can run
  code, so it is accepted only when the caller says it trusts the file;
- precomputed probabilities (an N×K array ``probs``), handled by :func:`read_probabilities`.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import AuditInputError
from ..sources.arrays import ArrayReader, open_array

TEACHER_FORMAT = "vae-audit-teacher/1"
PCA_GMM_KEYS = ("pca_mean", "pca_components", "log_weights", "means", "variances", "temperature")


class PcaGmmTeacher(nn.Module):
    """T(k|x) = softmax_k[(log w_k + Σ_j log N(y_j; m_kj, v_kj)) / τ] with y = (x − mean) @ Cᵀ.

    Computed in float64 so that the posterior matches scikit-learn's to rounding.
    """

    kind = "pca-gmm"

    def __init__(self, pca_mean, pca_components, log_weights, means, variances, temperature: float):
        super().__init__()
        for name, value in (("pca_mean", pca_mean), ("pca_components", pca_components),
                            ("log_weights", log_weights), ("means", means), ("variances", variances)):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float64).clone())
        self.temperature = float(temperature)

    @property
    def num_classes(self) -> int:
        return int(self.log_weights.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.pca_mean.shape[0])

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + Σ_j log N(y_j; m_kj, v_kj), B×K (before the temperature)."""
        y = (x.reshape(x.shape[0], -1).to(torch.float64) - self.pca_mean) @ self.pca_components.T
        diff2 = (y[:, None, :] - self.means[None]) ** 2 / self.variances[None]
        log_norm = -0.5 * (diff2 + torch.log(2 * math.pi * self.variances)[None]).sum(dim=2)
        return self.log_weights[None] + log_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher probabilities, B×K float64."""
        return torch.softmax(self.log_joint(x) / self.temperature, dim=1)

    def to_dict(self) -> dict:
        return {
            "format": TEACHER_FORMAT, "kind": self.kind,
            "pca_mean": self.pca_mean.clone(), "pca_components": self.pca_components.clone(),
            "log_weights": self.log_weights.clone(), "means": self.means.clone(),
            "variances": self.variances.clone(), "temperature": self.temperature,
        }


class ProgramTeacher(nn.Module):
    """A trusted torch.export program that maps x to logits; probabilities by softmax in float64."""

    kind = "torch-export"

    def __init__(self, module: nn.Module, num_classes: int, input_dim: int | None):
        super().__init__()
        self.module = module
        self.num_classes = num_classes
        self.input_dim = input_dim

    def train(self, mode: bool = True) -> "ProgramTeacher":
        # An exported program has no train/eval modes (it refuses .train()); it runs as exported.
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.module(x)
        return torch.softmax(logits.to(torch.float64), dim=1)


def load_teacher(path: str | Path, trust_code: bool = False, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Load ``teacher.pt`` (pca-gmm) or, when ``trust_code``, a ``.pt2`` torch.export program."""
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: no such teacher file")
    if path.suffix.lower() == ".pt2":
        return _load_program(path, trust_code, input_shape)
    return teacher_from_dict(_load_weights_only(path), str(path))


def _refusal_reason(exc: Exception) -> str:
    """The unsupported global named in torch's weights-only error, e.g. ``posix.system``."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f"a pickled {match.group(1)}" if match else "pickled objects"


def _load_weights_only(path: Path) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AuditInputError(
            f"{path}: refused to load: the file holds {_refusal_reason(exc)}, not only tensors and plain values "
            "(teachers are read with torch.load(weights_only=True); nothing in the file was run)"
        ) from None
    except Exception as exc:  # corrupt bytes make the weights-only reader raise IndexError, KeyError, struct.error …
        raise AuditInputError(f"{path}: not a readable torch file (truncated or corrupt: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]})") from None
    if not isinstance(obj, dict):
        raise AuditInputError(f"{path}: a teacher file must hold a dict, found {type(obj).__name__}")
    return obj


def teacher_from_dict(obj: dict, where: str = "teacher") -> PcaGmmTeacher:
    """Validate a teacher dict of DESIGN §3 and build the module."""
    if obj.get("format") != TEACHER_FORMAT:
        raise AuditInputError(f"{where}: not a vae-audit teacher (format {obj.get('format')!r}, expected {TEACHER_FORMAT!r})")
    if obj.get("kind") != "pca-gmm":
        raise AuditInputError(f"{where}: unknown teacher kind {obj.get('kind')!r} (supported: 'pca-gmm')")
    missing = [k for k in PCA_GMM_KEYS if k not in obj]
    if missing:
        raise AuditInputError(f"{where}: teacher is missing {', '.join(missing)}")
    arrays = {}
    for key in PCA_GMM_KEYS[:-1]:
        value = obj[key]
        if not isinstance(value, torch.Tensor):
            raise AuditInputError(f"{where}: teacher field {key!r} must be a tensor")
        if not torch.isfinite(value).all():
            raise AuditInputError(f"{where}: teacher field {key!r} contains NaN or inf")
        arrays[key] = value.to(torch.float64)
    D = arrays["pca_mean"].shape[0] if arrays["pca_mean"].ndim == 1 else -1
    K = arrays["log_weights"].shape[0] if arrays["log_weights"].ndim == 1 else -1
    comps = arrays["pca_components"]
    r = comps.shape[0] if comps.ndim == 2 else -1
    expected = {"pca_mean": (D,), "pca_components": (r, D), "log_weights": (K,), "means": (K, r), "variances": (K, r)}
    for key, shape in expected.items():
        if D < 1 or K < 2 or r < 1 or tuple(arrays[key].shape) != shape:
            raise AuditInputError(
                f"{where}: inconsistent teacher shapes ({', '.join(f'{k}={tuple(a.shape)}' for k, a in arrays.items())}); "
                "expected pca_mean (D,), pca_components (r, D), log_weights (K,), means and variances (K, r) with K >= 2"
            )
    if (arrays["variances"] <= 0).any():
        raise AuditInputError(f"{where}: teacher variances must be > 0")
    temperature = obj["temperature"]
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.item() if temperature.numel() == 1 else float("nan")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise AuditInputError(f"{where}: teacher temperature must be a finite number > 0, got {obj['temperature']!r}")
    return PcaGmmTeacher(temperature=float(temperature), **arrays)


def _load_program(path: Path, trust_code: bool, input_shape: tuple[int, ...] | None) -> ProgramTeacher:
    if not trust_code:
        raise AuditInputError(
            f"{path}: refused: a .pt2 program is unpickled when loaded and can run code; "
            "pass --trust-teacher-code only for a file you trust"
        )
    try:
        module = torch.export.load(str(path)).module()
    except Exception as exc:  # torch.export raises many types for foreign or truncated files
        raise AuditInputError(f"{path}: not a loadable torch.export program ({type(exc).__name__})") from None
    if input_shape is None:
        raise AuditInputError(f"{path}: a .pt2 teacher needs input data to run on")
    with torch.no_grad():
        try:
            logits = module(torch.zeros((1, *input_shape), dtype=torch.float32))
        except Exception as exc:
            raise AuditInputError(
                f"{path}: the teacher program does not accept a batch of inputs of shape {tuple(input_shape)} "
                f"({type(exc).__name__}); export it with a dynamic batch dimension"
            ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < 2:
        raise AuditInputError(f"{path}: the teacher program must return logits of shape (batch, K) with K >= 2")
    return ProgramTeacher(module, int(logits.shape[1]), int(np.prod(input_shape)))


def open_probabilities(path: str | Path, name: str = "probs") -> ArrayReader:
    """Precomputed teacher probabilities, an N×K array (validated row by row during the audit)."""
    reader = open_array(path, name)
    if len(reader.shape) != 2 or reader.shape[1] < 2:
        raise AuditInputError(f"{path}: {name!r} must be an N×K array with K >= 2, found shape {reader.shape}")
    if np.dtype(reader.dtype).kind != "f":
        raise AuditInputError(f"{path}: {name!r} must hold floating-point probabilities, found {reader.dtype}")
    return reader
