"""MNIST-style IDX files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (also the ``train-images.idx3-ubyte``
spelling, each optionally ``.gz``; MNIST, Fashion-MNIST and KMNIST use these names).

Magic numbers and sizes are checked against the files; raw files are memory-mapped, gzipped ones
decompressed once into a buffer of exactly the size the header promises, allocated only after
that size is checked against :data:`MAX_GZIP_BYTES` (a 1 MB file can claim 2³¹ images).
Samples (1, rows, cols) uint8.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ...errors import AuditInputError
from ..arrays import InMemoryArray
from ..regular_files import open_input
from .interface import Rows

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
MAX_GZIP_BYTES = 1 << 30  # what a gzipped IDX file may inflate to (it is held in memory whole)


def idx_spellings(name: str) -> tuple[str, ...]:
    """Raw before gzipped (a raw file can be memory-mapped); both dash and dot spellings."""
    dotted = name.replace("-idx", ".idx")
    return (name, dotted, f"{name}.gz", f"{dotted}.gz")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The array of an IDX file with this magic number: memory-mapped if raw, else decompressed."""
    ndim = magic & 0xFF
    with open_input(path) as raw:
        if path.suffix != ".gz":
            return _read_idx_stream(raw, path, magic, ndim, gzipped=False)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as handle:
                return _read_idx_stream(handle, path, magic, ndim, gzipped=True)
        except (OSError, EOFError, zlib.error):
            raise AuditInputError(f"{path}: not a readable gzip file (truncated or corrupt)") from None


def _read_idx_stream(handle, path: Path, magic: int, ndim: int, gzipped: bool) -> np.ndarray:
    header = handle.read(4 + 4 * ndim)
    if len(header) < 4 or struct.unpack(">I", header[:4])[0] != magic:
        found = f"0x{struct.unpack('>I', header[:4])[0]:08x}" if len(header) >= 4 else "none"
        raise AuditInputError(
            f"{path}: bad IDX magic number {found} (expected 0x{magic:08x}); not an MNIST "
            f"{'image' if ndim == 3 else 'label'} file"
        )
    if len(header) < 4 + 4 * ndim:
        raise AuditInputError(f"{path}: IDX file is truncated (incomplete header)")
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected = math.prod(dims)
    if gzipped:
        return _inflated(handle, path, dims, expected)
    size = os.fstat(handle.fileno()).st_size - len(header)
    _check_idx_size(path, dims, expected, size)
    if expected == 0:
        return np.empty(dims, np.uint8)
    return np.memmap(handle, dtype=np.uint8, mode="r", offset=len(header), shape=dims)


def _inflated(handle, path: Path, dims: tuple[int, ...], expected: int) -> np.ndarray:
    """The data the header promises, inflated into a buffer of exactly that size (checked first)."""
    if expected > MAX_GZIP_BYTES:
        raise AuditInputError(
            f"{path}: the IDX header promises {dims} = {expected} bytes, more than the {MAX_GZIP_BYTES}-byte "
            "limit for a gzipped IDX file (decompress it: raw IDX files are memory-mapped)"
        )
    data = np.empty(expected, np.uint8)
    view, done = data.data, 0
    while done < expected and (got := handle.readinto(view[done : done + (1 << 20)])):
        done += got
    _check_idx_size(path, dims, expected, done + len(handle.read(1)))
    return data.reshape(dims)


def _check_idx_size(path: Path, dims: tuple[int, ...], expected: int, actual: int) -> None:
    if actual < expected:
        raise AuditInputError(
            f"{path}: IDX file is truncated: the header promises {dims} = {expected} bytes of data, "
            f"the file holds {actual}"
        )
    if actual > expected:
        raise AuditInputError(f"{path}: IDX file is longer than its header {dims} says; corrupt or not an IDX file")


def open_idx_split(paths: list[Path]) -> Rows:
    images_path, labels_path = paths
    images = _read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(labels) != len(images):
        raise AuditInputError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
    rows = InMemoryArray(images.reshape(len(images), 1, *images.shape[1:]))
    return Rows(rows, lambda: np.asarray(labels, dtype=np.int64), [images_path, labels_path])
