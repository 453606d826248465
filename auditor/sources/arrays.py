"""Named arrays in `.safetensors`, `.npy` and `.npz` files, read in slices.

`.npy` arrays and `.safetensors` tensors are read row range by row range, so an audit never
loads a large input whole. (`.npz` members are read whole, once.) Every failure is an
:class:`AuditInputError` with a one-line message.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import threading
import weakref
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, overload

import numpy as np
from numpy.typing import DTypeLike

from ..errors import AuditInputError

SUFFIXES = (".safetensors", ".npy", ".npz")

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
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115
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


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """The header and the byte offset where tensor data start, checked here so that a truncated
    or foreign file gets a clear message."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise AuditInputError(f"{path}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100_000_000):
            raise AuditInputError(f"{path}: not a safetensors file or truncated (bad header length)")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AuditInputError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise AuditInputError(f"{path}: not a safetensors file (header is not a JSON object)")
    data_len = size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise AuditInputError(f"{path}: not a safetensors file (tensor {name!r} has no offsets)") from None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise AuditInputError(f"{path}: not a safetensors file (tensor {name!r} has bad offsets)")
        if end > data_len:
            raise AuditInputError(f"{path}: file is truncated (tensor {name!r} runs past the end)")
    return header, 8 + header_len


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    return dict(_safetensors_header(Path(path))[0].get("__metadata__") or {})


def _checked_suffix(path: Path) -> str:
    if not path.exists():
        raise AuditInputError(f"{path}: no such file")
    if not path.is_file():
        raise AuditInputError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise AuditInputError(f"{path}: unsupported file type {suffix!r} (use {', '.join(SUFFIXES)})")
    return suffix


def _npz_members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        raise AuditInputError(f"{path}: not a readable .npz file (truncated or corrupt)") from None


@overload
def open_array(path: str | Path, name: str, required: Literal[True] = True) -> ArrayReader: ...


@overload
def open_array(path: str | Path, name: str, required: bool) -> ArrayReader | None: ...


def open_array(path: str | Path, name: str, required: bool = True) -> ArrayReader | None:
    """Open array ``name`` of a file for row-sliced reading.

    A `.npy` file holds a single array, which is taken to be ``name``. Returns None when the
    array is absent and not required. The array's dtype is numeric (bool, integer or float) in
    every file type: anything else is refused here.
    """
    path = Path(path)
    suffix = _checked_suffix(path)
    if suffix == ".npy":
        shape, fortran_order, dtype, data_offset = _npy_layout(path, name)
        if fortran_order and len(shape) > 1:
            try:
                return MappedArray(_numeric(np.load(path, mmap_mode="r", allow_pickle=False), path, name))
            except (OSError, EOFError, ValueError):
                raise AuditInputError(f"{path}: not a readable .npy file (truncated or corrupt)") from None
        return FileRows(path, data_offset, shape, dtype)
    if suffix == ".npz":
        if f"{name}.npy" not in _npz_members(path):
            _absent(path, name, required)  # raises when required
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                array = archive[name]
        except ValueError as exc:
            raise AuditInputError(f"{path}: array {name!r} is not plain numeric data ({exc})") from None
        except (OSError, EOFError, zipfile.BadZipFile):
            raise AuditInputError(f"{path}: not a readable .npz file (truncated or corrupt)") from None
        return InMemoryArray(_numeric(array, path, name))
    header, data_start = _safetensors_header(path)
    if name not in header:
        _absent(path, name, required)  # raises when required
        return None
    info = header[name]
    scalar_type = _ST_DTYPES.get(info.get("dtype"))
    if scalar_type is None:
        raise AuditInputError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')}")
    shape, (begin, end) = info.get("shape"), info["data_offsets"]
    if not (
        isinstance(shape, list)
        and all(isinstance(n, int) and n >= 0 for n in shape)
        and end - begin == math.prod(shape) * np.dtype(scalar_type).itemsize
    ):
        raise AuditInputError(f"{path}: not a safetensors file (tensor {name!r}: shape and offsets disagree)")
    return FileRows(path, data_start + begin, tuple(shape), scalar_type)


def _npy_layout(path: Path, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data offset of a `.npy` file holding numeric data, whole."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(handle)
            data_offset = handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError):
        raise AuditInputError(f"{path}: not a readable .npy file (bad or truncated header)") from None
    if dtype.hasobject:
        raise AuditInputError(f"{path}: not a plain numeric .npy file (it holds Python objects)")
    _numeric_dtype(dtype, path, name)
    expected = data_offset + math.prod(shape) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise AuditInputError(
            f"{path}: file is truncated: the header promises {shape} {dtype} "
            f"({expected} bytes) but the file has {actual}"
        )
    return tuple(shape), bool(fortran_order), dtype, data_offset


def _absent(path: Path, name: str, required: bool) -> None:
    if required:
        raise AuditInputError(f"{path}: no array named {name!r} in this file")
    return None


def _numeric(array: np.ndarray, path: Path, name: str) -> np.ndarray:
    _numeric_dtype(array.dtype, path, name)
    return array


def _numeric_dtype(dtype: np.dtype, path: Path, name: str) -> None:
    if dtype.kind not in "biuf":  # bool, signed, unsigned, float
        raise AuditInputError(f"{path}: array {name!r} has non-numeric dtype {dtype}")


def read_whole(path: str | Path, name: str, required: bool = True) -> np.ndarray | None:
    reader = open_array(path, name, required)
    if reader is None:
        return None
    return np.asarray(reader.read(0, reader.shape[0] if reader.shape else 0))


def row_ranges(start: int, stop: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """[begin, end) ranges of at most ``batch_size`` rows covering [start, stop), in order."""
    for begin in range(start, stop, batch_size):
        yield begin, min(begin + batch_size, stop)


def first_rows(reader: ArrayReader, limit: int | None) -> ArrayReader:
    """The first ``limit`` rows of ``reader`` (all of them for None), still read lazily."""
    if limit is None or reader.shape[0] <= limit:
        return reader
    return FirstRows(reader, limit)
