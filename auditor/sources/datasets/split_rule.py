"""The train/test rule for data without a split of its own: **row i is test when i % M == 0**.

M is ``--test-every`` (default 5, the rule of the built-in digits). It applies to every data file
and folder that does not say which rows are train and which are test: tensor files, Parquet and
Arrow files, a single ``save_to_disk`` Dataset, an image folder without ``train/`` and ``test/``.
Rows are numbered in the data set's documented order, so the two sides are fixed by the data
alone: ``audit teacher fit`` (split train) and ``audit certify --split test`` never share a row.

Reading the test side touches only its own rows where a reader can pick rows (:class:`PickableRows`:
the image readers, which would otherwise decode M times the images they keep).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol, runtime_checkable

import numpy as np

from ..arrays import ArrayReader
from .interface import Rows

DEFAULT_TEST_EVERY = 5


def rule_text(every: int) -> str:
    """The rule in words, as the certificate records it."""
    return f"row i of the data set is test when i % {every} == 0, train otherwise"


def count_test_rows(num_rows: int, every: int) -> int:
    """How many of rows 0 … num_rows − 1 are test rows (i % every == 0)."""
    return (num_rows + every - 1) // every


def split_indices(num_rows: int, split: str, every: int) -> np.ndarray:
    """The rows of ``split`` in order, as indices into all rows."""
    rows = np.arange(num_rows)
    if split == "all":
        return rows
    is_test = rows % every == 0
    return rows[is_test] if split == "test" else rows[~is_test]


@runtime_checkable
class PickableRows(Protocol):
    """A reader that reads any rows in increasing order without reading the rows between them."""

    def read_picked(self, indices: np.ndarray) -> np.ndarray: ...


class SplitRows:
    """One side of the split rule over a reader of all rows, read lazily.

    Row j of the test side is row j·M; row j of the train side is row j + j // (M − 1) + 1.
    """

    def __init__(self, rows: ArrayReader, split: str, every: int):
        self._rows, self._test, self._every = rows, split == "test", every
        total = rows.shape[0]
        count = count_test_rows(total, every) if self._test else total - count_test_rows(total, every)
        self.shape = (count, *rows.shape[1:])
        self.dtype = rows.dtype

    def original_rows(self, start: int, stop: int) -> np.ndarray:
        j = np.arange(start, stop)
        return j * self._every if self._test else j + j // (self._every - 1) + 1

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.shape[0])
        if stop <= start:
            return np.empty((0, *self.shape[1:]), self.dtype)
        wanted = self.original_rows(start, stop)
        if isinstance(self._rows, PickableRows):
            return self._rows.read_picked(wanted)
        block = self._rows.read(int(wanted[0]), int(wanted[-1]) + 1)
        return block[wanted - wanted[0]]  # fancy indexing: an array of its own


def apply_split_rule(rows: Rows, split: str, every: int) -> Rows:
    """``rows`` (every row of a data set without its own split) cut to ``split`` by the rule."""
    if split == "all":
        return rows
    read_labels = rows.labels

    def labels() -> np.ndarray | None:
        every_label = read_labels()
        if every_label is None:
            return None
        return np.asarray(every_label)[split_indices(len(every_label), split, every)]

    return replace(rows, rows=SplitRows(rows.rows, split, every), labels=labels, split_rule=False)
