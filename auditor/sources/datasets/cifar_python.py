"""CIFAR-10/100, python version: pickled batches read with a restricted unpickler.

CIFAR-10: ``data_batch_1`` … ``data_batch_5`` and ``test_batch``, each a dict with ``data``
(N × 3072 uint8) and ``labels``; CIFAR-100: ``train`` and ``test`` with ``fine_labels``. The
unpickler builds numpy arrays, lists, dicts, strings and numbers and refuses every other global,
so a pickle from a stranger cannot run code. Samples (3, 32, 32) uint8.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np

from ...errors import AuditInputError
from ..arrays import InMemoryArray
from .cifar_binary import CIFAR_IMAGE_BYTES, CIFAR_SAMPLE_SHAPE
from .interface import Rows
from .rows import concatenate


def _numpy_array_builders() -> dict[tuple[str, str], object]:
    """The globals a pickled numpy array needs, under both numpy 1 and numpy 2 module names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]  # the same modules, numpy 1's name
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        # Protocol 5 pickles (the default from Python 3.14) rebuild arrays from a buffer.
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]  # private: not in numpy's stubs
    # Protocol 2 pickles written by Python 3 spell bytes as _codecs.encode(text, "latin1").
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays, lists, dicts, strings and numbers; refuses every other global.

    Code runs during unpickling only through globals found here, so refusing them all but the
    array builders means a hostile pickle cannot execute anything.
    """

    _allowed = _numpy_array_builders()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid) -> NoReturn:
        raise _RefusedGlobal("a persistent id")


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _restricted_unpickle(path: Path) -> object:
    try:
        with open(path, "rb") as handle:
            return _ArraysOnlyUnpickler(handle, encoding="bytes").load()
    except _RefusedGlobal as refused:
        raise AuditInputError(
            f"{path}: refused to unpickle {refused}: only numpy arrays, lists and dicts are allowed"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        UnicodeDecodeError,
    ) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AuditInputError(f"{path}: not a readable CIFAR python batch ({reason})") from None


def _dict_entry(batch: dict, key: str):
    """Python 2 pickles (the CIFAR originals) have bytes keys; ones written by Python 3 may not."""
    return batch[key.encode()] if key.encode() in batch else batch.get(key)


def _open_cifar_pickle(path: Path, label_key: str) -> Rows:
    batch = _restricted_unpickle(path)
    if not isinstance(batch, dict):
        raise AuditInputError(f"{path}: not a CIFAR python batch (expected a dict)")
    data = _dict_entry(batch, "data")
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == CIFAR_IMAGE_BYTES
    ):
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise AuditInputError(f"{path}: 'data' must be a uint8 array of shape (N, {CIFAR_IMAGE_BYTES}), found {found}")
    labels = _checked_pickle_labels(_dict_entry(batch, label_key), len(data), path, label_key)
    images = data.reshape(-1, *CIFAR_SAMPLE_SHAPE)
    return Rows(InMemoryArray(images), lambda: labels, [path])


def _checked_pickle_labels(raw, count: int, path: Path, key: str) -> np.ndarray:
    if raw is None:
        raise AuditInputError(f"{path}: no '{key}' in this CIFAR python batch")
    try:
        labels = np.asarray(raw)
    except (ValueError, TypeError):  # ragged or odd objects: not a list of labels
        labels = np.empty((0, 0))
    if count == 0 and labels.size == 0:
        return np.empty(0, np.int64)
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise AuditInputError(f"{path}: '{key}' must be {count} integer labels, one per image")
    return labels.astype(np.int64)


def cifar_pickle_opener(label_key: str) -> Callable[[list[Path]], Rows]:
    def open_split(paths: list[Path]) -> Rows:
        parts = [_open_cifar_pickle(path, label_key) for path in paths]
        return concatenate(parts, str(paths[0].parent))

    return open_split
