"""One split of a data set, read lazily, row range by row range: what the audit and the trainer read.

Splits: ``train``, ``test`` or ``all``; for folders ``all`` is train followed by test. Data
without a split of their own are split by the file split rule
(:mod:`auditor.sources.datasets.split_rule`). :func:`open_dataset` reads ``all`` unless told
otherwise (``audit certify`` and ``audit design`` too; ``audit teacher`` and ``audit train`` read
``train``). ``--limit L`` keeps the first L samples of the split.

Samples keep their stored dtype: uint8 stays uint8 (so it crosses to the device as bytes) and
:func:`to_unit_float` scales it to [0, 1] there; float data is used as stored. NaN and inf are
not looked for here: the audit pass checks each batch on the device, and no file is scanned
whole to open it. The formats and how a SPEC names one: :mod:`auditor.sources.datasets.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...errors import AuditInputError
from ..arrays import ArrayReader
from ..hashing import InputRecord

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "test", "all")


class Dataset:
    """The samples of one split of a data set, read lazily; an ``ArrayReader``.

    ``shape`` is (N, *sample_shape) after split and limit; ``dtype`` is the stored dtype in
    this machine's byte order (torch takes no other; a big-endian file is swapped as it is read).
    """

    def __init__(
        self,
        spec: str,
        split: str,
        rows: ArrayReader,
        labels: Callable[[], np.ndarray | None],
        inputs: Sequence[InputRecord],
        limit: int | None = None,
        split_rule: str | None = None,
    ):
        count = rows.shape[0] if limit is None else min(limit, rows.shape[0])
        self.spec = spec
        self.split = split
        self.shape: tuple[int, ...] = tuple(int(size) for size in (count, *rows.shape[1:]))
        self.dtype = np.dtype(rows.dtype).newbyteorder("=")
        self.inputs = list(inputs)
        self.split_rule = split_rule  # the file split rule in words, where it chose the split's rows
        self._rows = rows
        self._read_labels = labels
        self._labels: np.ndarray | None = None

    @property
    def num_samples(self) -> int:
        return self.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the split (stop is clipped to N), as an owned C-order array."""
        if start < 0 or stop < 0:
            raise ValueError(f"row range [{start}, {stop}) must not be negative")
        stop = min(stop, self.num_samples)
        if stop <= start:
            return np.empty((0, *self.sample_shape), self.dtype)
        rows = self._rows.read(start, stop)
        if rows.flags.owndata and rows.flags.c_contiguous and rows.flags.writeable and rows.dtype == self.dtype:
            return rows  # a reader's fresh array (file readers make one per read): already owned
        # A copy, so callers never hold a view into a memory map or into a cached array.
        return np.array(rows, dtype=self.dtype, order="C", copy=True)

    def labels(self) -> np.ndarray | None:
        """Integer labels (int64) of the split's rows, or None when the data set has none."""
        if self._labels is None:
            # Read once: for CIFAR binary this walks every record of the files.
            labels = self._read_labels()
            if labels is None:
                return None
            self._labels = np.array(labels[: self.num_samples], dtype=np.int64)
        return self._labels.copy()

    def __repr__(self) -> str:
        return f"Dataset(spec={self.spec!r}, split={self.split!r}, shape={self.shape}, dtype={self.dtype})"


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 / 255 (exactly [0, 1]); any other dtype → float32, values unchanged.

    Pure torch ops on the batch's own device, so uint8 batches cross to the GPU as bytes.
    """
    import torch

    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255)
    return batch.to(torch.float32)


def checked_split(split: str | None) -> str:
    if split is None:
        return "all"
    if split not in SPLITS:
        raise AuditInputError(f"unknown split {split!r}: use train, test or all")
    return split


def check_limit(limit: int | None) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise AuditInputError(f"--limit must be a whole number of samples >= 1, got {limit!r}")
