"""Named arrays in `.safetensors`, `.npy` and `.npz` files, read in slices.

`.npy` arrays, `.safetensors` tensors and stored (``np.savez``) `.npz` members are read row range
by row range, so an audit never loads a large input whole; a deflated (``np.savez_compressed``)
member is inflated whole, once, and only up to :data:`MAX_INFLATED_BYTES`. Every size a header
claims is checked against the file before anything is allocated, arrays hold only the plain
numeric dtypes of :mod:`auditor.sources.npy_format`, and every failure is an
:class:`AuditInputError` with a one-line message.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, overload

import numpy as np
from numpy.typing import DTypeLike

from ..errors import AuditInputError
from .npy_format import NpyLayout, read_npy_layout
from .regular_files import open_input
from .safetensors_header import read_safetensors_header
from .zip_member import ZipRecord, member_head, read_member, zip_records

SUFFIXES = (".safetensors", ".npy", ".npz")
# A deflated .npz member is inflated whole: at most this many bytes (np.savez files, .npy and
# .safetensors are read row by row and have no such limit).
MAX_INFLATED_BYTES = 1 << 30

# safetensors dtype codes → numpy dtypes we accept as data.
_ST_DTYPES = {
    "U8": np.uint8,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "BOOL": np.bool_,
}


class ArrayReader(Protocol):
    """Row-sliceable array: what the audit pass reads inputs, latents and probabilities from.

    ``read`` returns either a view (of an array in memory or of a map), which callers that keep
    it copy, or an array of its own that nothing else refers to (``flags.owndata``), which they
    may keep as it is. A reader never hands out the same owned array twice.
    """

    # Read-only properties, not plain attributes: readers compute them (InMemoryArray) or fix
    # them at construction, and a narrower shape type (a 4-tuple of CIFAR records) still fits.
    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...


@dataclass
class InMemoryArray:
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


class FileRows:
    """Rows of a row-major array stored at byte ``offset`` of a file, read with ``pread``.

    A read copies its rows from the kernel's page cache straight into a fresh array. There is
    no memory map: the reading thread takes no page faults and sends no TLB-flush interrupts to
    the cores running the forward passes, and resident memory stays flat in N. C-ordered
    `.npy` arrays and safetensors tensors are both read this way.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: DTypeLike):
        self.path, self.offset = Path(path), int(offset)
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self._row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        # Open for the reader's lifetime (every batch reads from it), closed when the reader goes.
        self._file = open_input(path)
        self._lock = threading.Lock()  # only for the seek-and-read fallback
        weakref.finalize(self, self._file.close)

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.shape[0] if self.shape else 0)
        rows = np.empty((max(0, stop - start), *self.shape[1:]), self.dtype)
        view = memoryview(rows.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # numpy's stubs: buffer only from 3.12
        position, done = self.offset + start * self._row_bytes, 0
        while done < len(view):
            got = self._read_into(view[done:], position + done)
            if got == 0:
                raise AuditInputError(f"{self.path}: file is truncated (it ended while reading rows {start}-{stop})")
            done += got
        return rows

    def _read_into(self, buffer: memoryview, position: int) -> int:
        if hasattr(os, "preadv"):
            return os.preadv(self._file.fileno(), [buffer], position)
        with self._lock:
            self._file.seek(position)
            return self._file.readinto(buffer)


class MappedArray(InMemoryArray):
    """A memory-mapped `.npy` array whose rows are not contiguous on disk (Fortran order).

    Rows are copied out, then the whole map is released with ``madvise(MADV_DONTNEED)``: pages
    of a file mapping count in resident memory once touched, and without the release a pass
    would look like it loads the file whole. The data stay in the kernel's page cache.
    """

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = np.ascontiguousarray(self.array[start:stop])  # an owned row-major copy, so the pages can go
        # A row range touches a page in every column: release the whole map, not page ranges.
        release_pages(getattr(self.array, "_mmap", None))
        return rows


def release_pages(mapping: mmap.mmap | None) -> None:
    """Drop a read-only file mapping's pages from this process's resident memory (they stay in the
    page cache, and are mapped again when next touched), where the platform can."""
    if mapping is not None and hasattr(mapping, "madvise"):
        mapping.madvise(mmap.MADV_DONTNEED)


class FirstRows:
    """Rows [0, count) of another reader, still read lazily."""

    def __init__(self, reader: ArrayReader, count: int):
        self.reader, self.count = reader, count
        self.shape = (count, *reader.shape[1:])
        self.dtype = reader.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.reader.read(start, min(stop, self.count))


def _checked_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise AuditInputError(f"{path}: unsupported file type {suffix!r} (use {', '.join(SUFFIXES)})")
    return suffix


@overload
def open_array(path: str | Path, name: str, required: Literal[True] = True) -> ArrayReader: ...


@overload
def open_array(path: str | Path, name: str, required: bool) -> ArrayReader | None: ...


def open_array(path: str | Path, name: str, required: bool = True) -> ArrayReader | None:
    """Open array ``name`` of a file for row-sliced reading.

    A `.npy` file holds a single array, which is taken to be ``name``. Returns None when the
    array is absent and not required. The array's dtype is plain numeric (bool, integer or
    float) in every file type: anything else is refused here.
    """
    path = Path(path)
    suffix = _checked_suffix(path)
    if suffix == ".npy":
        return _npy_array(path, name)
    if suffix == ".npz":
        return _npz_array(path, name, required)
    return _safetensors_array(path, name, required)


def _npy_array(path: Path, name: str) -> ArrayReader:
    with open_input(path) as handle:
        layout = read_npy_layout(handle, f"{path}: array {name!r}")
        actual = os.fstat(handle.fileno()).st_size
        expected = layout.header_bytes + layout.data_bytes
        if actual < expected:
            raise AuditInputError(
                f"{path}: file is truncated: the header promises {layout.shape} {layout.dtype} "
                f"({expected} bytes) but the file has {actual}"
            )
        if layout.fortran_order and len(layout.shape) > 1 and layout.data_bytes:
            return MappedArray(np.memmap(handle, layout.dtype, "r", layout.header_bytes, layout.shape, order="F"))
    return FileRows(path, layout.header_bytes, layout.shape, layout.dtype)


def _npz_array(path: Path, name: str, required: bool) -> ArrayReader | None:
    where = f"{path}: array {name!r}"
    with open_input(path) as handle:
        record = zip_records(handle, str(path)).get(f"{name}.npy")
        if record is None:
            _absent(path, name, required)  # raises when required
            return None
        layout = read_npy_layout(io.BytesIO(member_head(handle, record, where)), where)
        if layout.header_bytes + layout.data_bytes != record.size:
            raise AuditInputError(
                f"{where}: the .npy header claims {layout.shape} {layout.dtype} ({layout.data_bytes} bytes) "
                f"but the zip member holds {record.size - layout.header_bytes} bytes of data"
            )
        if not record.deflated and not (layout.fortran_order and len(layout.shape) > 1):
            return FileRows(path, record.data_offset + layout.header_bytes, layout.shape, layout.dtype)
        return InMemoryArray(_whole_member(handle, record, layout, where))


def _whole_member(handle, record: ZipRecord, layout: NpyLayout, where: str) -> np.ndarray:
    """A deflated (or Fortran-ordered) member, read whole after its size is checked, in C order."""
    if layout.data_bytes > MAX_INFLATED_BYTES:
        raise AuditInputError(
            f"{where}: is {layout.data_bytes} bytes when inflated, more than the {MAX_INFLATED_BYTES}-byte limit "
            "for a compressed .npz member; save it with np.savez (uncompressed) or as .npy or .safetensors, "
            "which are read row by row"
        )
    flat = read_member(handle, record, layout.header_bytes, layout.data_bytes, where).view(layout.dtype)
    if layout.fortran_order:
        return np.ascontiguousarray(flat.reshape(layout.shape[::-1]).T)
    return flat.reshape(layout.shape)


def _safetensors_array(path: Path, name: str, required: bool) -> ArrayReader | None:
    entry = read_safetensors_header(path).tensors.get(name)
    if entry is None:
        _absent(path, name, required)  # raises when required
        return None
    scalar_type = _ST_DTYPES.get(entry.dtype)
    if scalar_type is None:
        raise AuditInputError(f"{path}: tensor {name!r} has unsupported dtype {entry.dtype}")
    return FileRows(path, entry.begin, entry.shape, scalar_type)


def _absent(path: Path, name: str, required: bool) -> None:
    if required:
        raise AuditInputError(f"{path}: no array named {name!r} in this file")
    return None


def read_whole(path: str | Path, name: str, required: bool = True) -> np.ndarray | None:
    reader = open_array(path, name, required)
    if reader is None:
        return None
    return np.asarray(reader.read(0, reader.shape[0] if reader.shape else 0))


def row_ranges(start: int, stop: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """[begin, end) ranges of at most ``batch_size`` rows covering [start, stop), in order."""
    for begin in range(start, stop, batch_size):
        yield begin, min(begin + batch_size, stop)


# Rows [begin, end) of a reader, or the rows at these indices, in this order (a shuffled batch).
RowSelection = tuple[int, int] | np.ndarray


def selection_size(rows: RowSelection) -> int:
    return rows[1] - rows[0] if isinstance(rows, tuple) else len(rows)


def read_rows(reader: ArrayReader, rows: RowSelection) -> np.ndarray:
    """The rows ``rows`` selects from ``reader``, in its order (an array of their own for indices).

    Indices into an array in memory are gathered at once; a reader that picks rows
    (``read_picked``, e.g. image files) gets the distinct indices in increasing order; from any
    other reader each run of consecutive indices is read with one ``read`` call, so a file is
    never read row by row when the rows asked for lie together.
    """
    if isinstance(rows, tuple):
        return reader.read(*rows)
    indices = np.asarray(rows, dtype=np.int64)
    if isinstance(reader, InMemoryArray):
        return reader.array[indices]
    if not len(indices):
        return np.empty((0, *reader.shape[1:]), reader.dtype)
    unique, position = np.unique(indices, return_inverse=True)
    if hasattr(reader, "read_picked"):  # a reader that reads increasing rows without those between
        return reader.read_picked(unique)[position]
    runs = np.split(unique, np.flatnonzero(np.diff(unique) > 1) + 1)
    return np.concatenate([reader.read(int(run[0]), int(run[-1]) + 1) for run in runs])[position]


def first_rows(reader: ArrayReader, limit: int | None) -> ArrayReader:
    """The first ``limit`` rows of ``reader`` (all of them for None), still read lazily."""
    if limit is None or reader.shape[0] <= limit:
        return reader
    return FirstRows(reader, limit)
