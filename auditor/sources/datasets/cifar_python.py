"""CIFAR-10/100, python version: pickled batches read without unpickling numpy (:mod:`auditor.sources.safe_pickle`).

CIFAR-10: ``data_batch_1`` … ``data_batch_5`` and ``test_batch``; CIFAR-100: ``train`` and
``test``. Each is a dict, with bytes keys (the Python 2 originals) or str keys (pickled again by
Python 3), of exactly the entries CIFAR has: ``data`` (an N × 3072 uint8 array), the integer
label lists ``labels`` (CIFAR-10) or ``fine_labels`` and ``coarse_labels`` (CIFAR-100), and
``batch_label`` and ``filenames``. Anything else is refused; a batch file may be at most
:data:`MAX_BATCH_BYTES` bytes (CIFAR-100's ``train`` is 161 MB). Samples (3, 32, 32) uint8.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import AuditInputError, shown
from ..arrays import InMemoryArray
from ..regular_files import read_input
from ..safe_pickle import PickledArray, load_array_pickle
from .cifar_binary import CIFAR_IMAGE_BYTES, CIFAR_SAMPLE_SHAPE
from .interface import Rows
from .rows import concatenate

MAX_BATCH_BYTES = 256 << 20
LABEL_LISTS = ("labels", "fine_labels", "coarse_labels")
TEXTS = ("batch_label",)
TEXT_LISTS = ("filenames",)


def _open_cifar_pickle(path: Path, label_key: str) -> Rows:
    data = read_input(path, MAX_BATCH_BYTES, "a CIFAR python batch")
    batch = _entries(load_array_pickle(data, str(path), "CIFAR python batch"), path)
    array = batch.get("data")
    shape, raw = (array.shape, array.raw) if isinstance(array, PickledArray) else (None, None)
    if shape is None or raw is None or len(shape) != 2 or shape[1] != CIFAR_IMAGE_BYTES:
        found = f"an array of shape {shape}" if isinstance(array, PickledArray) else shown(array)
        raise AuditInputError(f"{path}: 'data' must be a uint8 array of shape (N, {CIFAR_IMAGE_BYTES}), found {found}")
    count = shape[0]
    if label_key not in batch:
        raise AuditInputError(f"{path}: no '{label_key}' in this CIFAR python batch")
    for key, value in batch.items():
        _check_entry(key, value, count, path)
    labels = np.array(batch[label_key], dtype=np.int64)
    # The raw bytes were made by the unpickler for this array alone: a view of them is no one else's.
    images = np.frombuffer(raw, dtype=np.uint8).reshape(count, *CIFAR_SAMPLE_SHAPE)
    return Rows(InMemoryArray(images), lambda: labels, [path])


def _entries(batch, path: Path) -> dict:
    """The batch's entries under str keys; bytes keys (Python 2 pickles) decoded, each key once."""
    if not isinstance(batch, dict):
        raise AuditInputError(f"{path}: not a CIFAR python batch (expected a dict, found {type(batch).__name__})")
    known = ("data", *LABEL_LISTS, *TEXTS, *TEXT_LISTS)
    entries: dict = {}
    for key, value in batch.items():
        name = key.decode("latin1") if isinstance(key, bytes) else key
        if name not in known:
            raise AuditInputError(
                f"{path}: not a CIFAR python batch (unknown entry {shown(key)}; CIFAR has {', '.join(known)})"
            )
        if name in entries:
            raise AuditInputError(f"{path}: not a CIFAR python batch ('{name}' is given both as bytes and as str)")
        entries[name] = value
    return entries


def _check_entry(key: str, value, count: int, path: Path) -> None:
    if key in LABEL_LISTS:
        # Flat ints, looked at one by one before any conversion: a list that holds one list a
        # million times would otherwise be expanded into gigabytes.
        if not (isinstance(value, list) and len(value) == count and all(_is_label(v) for v in value)):
            raise AuditInputError(f"{path}: '{key}' must be {count} integer labels, one per image (a list of ints)")
    elif key in TEXTS and not isinstance(value, (bytes, str)):
        raise AuditInputError(f"{path}: '{key}' must be a string, found {type(value).__name__}")
    elif key in TEXT_LISTS and not (isinstance(value, list) and all(isinstance(v, (bytes, str)) for v in value)):
        raise AuditInputError(f"{path}: '{key}' must be a list of strings")


def _is_label(value) -> bool:
    return type(value) is int and 0 <= value < 2**63


def cifar_pickle_opener(label_key: str) -> Callable[[list[Path]], Rows]:
    def open_split(paths: list[Path]) -> Rows:
        parts = [_open_cifar_pickle(path, label_key) for path in paths]
        return concatenate(parts, str(paths[0].parent))

    return open_split
