"""The host side of the pass: batches of every source read (and, for CUDA, pinned) ahead of use on a
background thread, whose file reads release the GIL and so overlap the forward passes.

A batch is a range of rows (the audit reads its rows in order) or a list of row indices (the
trainer's shuffled batches); both travel the same way.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..certificate.state import nonfinite_rows
from ..sources.arrays import ArrayReader, RowSelection, read_rows, selection_size
from . import helper_threads

PREFETCH_DEPTH = 2  # host batches read ahead: one being copied, one waiting


class Batch(NamedTuple):
    """The selected rows of every source, by role; ``nonfinite_rows`` (a scalar tensor) is the
    count of input rows holding NaN/inf, or None where it is still to be counted on the device."""

    rows: RowSelection
    tensors: dict[str, torch.Tensor]
    nonfinite_rows: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return selection_size(self.rows)


def input_nonfinite_rows(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows holding NaN/inf in the batch's inputs (``x`` and ``x_teacher``), as a scalar on their device."""
    counts = [nonfinite_rows(tensors[role]) for role in ("x", "x_teacher") if role in tensors]
    if not counts:
        return torch.zeros((), dtype=torch.int64, device=next(iter(tensors.values())).device)
    return counts[0] if len(counts) == 1 else counts[0] + counts[1]


def read_host_batch(sources: dict[str, ArrayReader], selection: RowSelection, pin: bool) -> dict[str, torch.Tensor]:
    """The selected rows of every source as CPU tensors in their stored dtype (pinned for CUDA)."""
    batch = {}
    for role, src in sources.items():
        rows = read_rows(src, selection)
        # Row-major, writable and in this machine's byte order, as torch.from_numpy needs: file
        # readers return such fresh arrays; any other is copied here, in the reader thread.
        tensor = torch.from_numpy(np.require(rows, dtype=rows.dtype.newbyteorder("="), requirements=("C", "W")))
        batch[role] = tensor.pin_memory() if pin else tensor
    return batch


_DONE = object()


def host_batches(
    sources: dict[str, ArrayReader],
    selections: Sequence[RowSelection],
    pin: bool = False,
    prefetch: bool = True,
    count_nonfinite: bool = False,
) -> Iterator[Batch]:
    """A :class:`Batch` for each selection (a row range, or row indices); with ``prefetch`` a
    background thread reads ahead.

    The reads (file reads, copies, pinning) release the GIL, so on
    a CPU they overlap with the forward passes of the batch before. ``count_nonfinite`` counts
    the non-finite input rows there too (for a CPU pass, whose host batches are its device
    batches). A reader error is raised in the caller, at the batch where it happened.
    """

    def read(selection: RowSelection) -> Batch:
        tensors = read_host_batch(sources, selection, pin)
        return Batch(selection, tensors, input_nonfinite_rows(tensors) if count_nonfinite else None)

    if not prefetch:
        for selection in selections:
            yield read(selection)
        return

    slots: queue.Queue = queue.Queue(maxsize=PREFETCH_DEPTH)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read_all() -> None:
        helper_threads.yield_to_forward_passes()
        try:
            for selection in selections:
                if not put(read(selection)):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    reader = threading.Thread(target=read_all, name="audit-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()
