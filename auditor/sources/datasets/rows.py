"""Several row sources read as one: the files of a split, or train followed by test."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...errors import AuditInputError
from ..arrays import ArrayReader
from .interface import Rows


def concatenate(parts: list[Rows], what: str) -> Rows:
    if len(parts) == 1:
        return parts[0]
    shapes = {tuple(part.rows.shape[1:]) for part in parts}
    dtypes = {np.dtype(part.rows.dtype) for part in parts}
    if len(shapes) > 1 or len(dtypes) > 1:
        raise AuditInputError(f"{what}: files disagree on the sample shape or dtype")
    return Rows(
        ConcatenatedRows([part.rows for part in parts]),
        concatenated_labels([part.labels for part in parts]),
        [path for part in parts for path in part.files],
        [folder for part in parts for folder in part.image_folders],
    )


def concatenated_labels(readers: list[Callable[[], np.ndarray | None]]) -> Callable[[], np.ndarray | None]:
    def labels() -> np.ndarray | None:
        pieces = [reader() for reader in readers]
        if any(piece is None for piece in pieces):
            return None
        return np.concatenate([np.asarray(piece, dtype=np.int64) for piece in pieces])

    return labels


class ConcatenatedRows:
    """Several row readers read as one, in order; a read touches only the parts it overlaps."""

    def __init__(self, parts: list[ArrayReader]):
        self._parts = parts
        self._starts = [0]
        for part in parts:
            self._starts.append(self._starts[-1] + part.shape[0])
        self.shape = (self._starts[-1], *parts[0].shape[1:])
        self.dtype = np.dtype(parts[0].dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for part, begin, end in zip(self._parts, self._starts, self._starts[1:]):
            low, high = max(start, begin), min(stop, end)
            if low < high:
                pieces.append(part.read(low - begin, high - begin))
        if not pieces:
            return np.empty((0, *self.shape[1:]), self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
