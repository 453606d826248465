"""CIFAR-10/100, binary version: records of label bytes then a 3×32×32 image, memory-mapped.

CIFAR-10: ``data_batch_1.bin`` … ``data_batch_5.bin`` (train) and ``test_batch.bin`` (test),
records of 1 label byte + 3072 image bytes. CIFAR-100: ``train.bin`` and ``test.bin``, records of
2 label bytes (coarse, fine; the fine label is used) + 3072 image bytes. Samples (3, 32, 32) uint8.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import AuditInputError
from ..regular_files import open_input
from .interface import Rows
from .rows import concatenate

CIFAR_SAMPLE_SHAPE = (3, 32, 32)
CIFAR_IMAGE_BYTES = 3 * 32 * 32


class _CifarRecordFile:
    """One CIFAR binary file: records of label bytes then a 3×32×32 image, memory-mapped."""

    def __init__(self, path: Path, label_bytes: int):
        record = label_bytes + CIFAR_IMAGE_BYTES
        with open_input(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size % record:
                raise AuditInputError(
                    f"{path}: size {size} is not a multiple of the {record}-byte CIFAR record "
                    f"(truncated or not this CIFAR version)"
                )
            count = size // record
            # np.memmap refuses empty files; an empty batch is simply zero records.
            self._records = (
                np.memmap(handle, dtype=np.uint8, mode="r", shape=(count, record))
                if count
                else np.empty((0, record), np.uint8)
            )
        self._label_bytes = label_bytes
        self.shape = (count, *CIFAR_SAMPLE_SHAPE)
        self.dtype = np.dtype(np.uint8)

    def read(self, start: int, stop: int) -> np.ndarray:
        images = self._records[start:stop, self._label_bytes :]
        return np.ascontiguousarray(images).reshape(-1, *CIFAR_SAMPLE_SHAPE)

    def labels(self) -> np.ndarray:
        # The last label byte: the only one in CIFAR-10, the fine label in CIFAR-100.
        return np.array(self._records[:, self._label_bytes - 1], dtype=np.int64)


def cifar_binary_opener(label_bytes: int) -> Callable[[list[Path]], Rows]:
    def open_split(paths: list[Path]) -> Rows:
        parts = []
        for path in paths:
            records = _CifarRecordFile(path, label_bytes)
            parts.append(Rows(records, records.labels, [path]))
        return concatenate(parts, str(paths[0].parent))

    return open_split
