"""``FILE.npz`` / ``FILE.npy`` / ``FILE.safetensors``: samples in array ``x``, optional labels ``y``.

One sample per row: shape (N, D), (N, C, H, W) or any (N, ...) with at least 2 dimensions;
integer labels may be given in array ``y`` of shape (N,) (a ``.npy`` file holds one array, ``x``,
and so has no labels). ``.npy`` and ``.safetensors`` files are read row range by row range. A
file has no split of its own: the file split rule applies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import AuditInputError
from ..arrays import SUFFIXES, open_array, read_whole
from .interface import FileFormat, Rows
from .options import DataOptions


class TensorFile(FileFormat):
    name = "tensor file"
    suffixes = SUFFIXES

    def open(self, path: Path, split: str, options: DataOptions) -> Rows:
        rows = open_array(path, "x", required=True)
        if len(rows.shape) < 2:
            raise AuditInputError(
                f"{path}: array 'x' has shape {tuple(rows.shape)}; expected one sample per row, "
                f"shape (N, D) or (N, C, H, W)"
            )
        return Rows(rows, _file_labels(path, rows.shape[0]), [path], split_rule=True)


def _file_labels(path: Path, count: int) -> Callable[[], np.ndarray | None]:
    """Reader of the optional 'y' array, checked now (shape, dtype) and read when asked for."""
    if path.suffix.lower() == ".npy":
        return lambda: None  # the one array of a .npy file is x
    labels = open_array(path, "y", required=False)
    if labels is None:
        return lambda: None
    if tuple(labels.shape) != (count,):
        raise AuditInputError(
            f"{path}: array 'y' has shape {tuple(labels.shape)}; expected integer labels of shape ({count},)"
        )
    if np.dtype(labels.dtype).kind not in "iu":
        raise AuditInputError(f"{path}: array 'y' has dtype {labels.dtype}; labels must be integers")
    return lambda: read_whole(path, "y")
