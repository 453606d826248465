"""Named arrays in `.safetensors`, `.npy` and `.npz` files, read in slices.

`.npy` files are memory-mapped and `.safetensors` tensors are read slice by slice, so an
audit never loads a large input whole. (`.npz` members cannot be memory-mapped and are read
once.) Every failure is an :class:`AuditInputError` with a one-line message.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import AuditInputError

SUFFIXES = (".safetensors", ".npy", ".npz")

# safetensors dtype codes → numpy dtypes we accept as data.
_ST_DTYPES = {
    "U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
    "F16": np.float16, "F32": np.float32, "F64": np.float64, "BOOL": np.bool_,
}


class ArrayReader(Protocol):
    """Row-sliceable array: what the audit pass reads inputs, latents and probabilities from."""

    shape: tuple[int, ...]
    dtype: np.dtype

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


class MappedArray(InMemoryArray):
    """A memory-mapped `.npy` array: rows are copied out, then dropped from this process's map.

    Pages of a file mapping count in resident memory (RSS) once touched, so a pass over a large
    file would look like it loads the file whole. After each read the fully-read pages are
    released with ``madvise(MADV_DONTNEED)``: the data stay in the kernel's page cache, and
    resident memory stays flat in N.
    """

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = np.array(self.array[start:stop])  # an owned copy, so the pages can go
        self._release(start, stop)
        return rows

    def _release(self, start: int, stop: int) -> None:
        mapping = getattr(self.array, "_mmap", None)
        if mapping is None or not hasattr(mapping, "madvise") or stop <= start:
            return
        row_bytes = self.array.strides[0] if self.array.ndim else 0
        base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
        first = self.array.ctypes.data - base + start * row_bytes
        last = self.array.ctypes.data - base + stop * row_bytes
        page = mmap.PAGESIZE
        begin, end = first // page * page, last // page * page  # the page holding `last` is read next
        if end > begin:
            mapping.madvise(mmap.MADV_DONTNEED, begin, end - begin)


class FirstRows:
    """Rows [0, count) of another reader, still read lazily."""

    def __init__(self, reader: ArrayReader, count: int):
        self.reader, self.count = reader, count
        self.shape = (count, *reader.shape[1:])
        self.dtype = reader.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.reader.read(start, min(stop, self.count))


class SafetensorsArray:
    """One tensor of a safetensors file, read by row ranges through ``safe_open().get_slice``."""

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype):
        from safetensors import safe_open

        self._handle = safe_open(str(path), framework="numpy")
        self._slice = self._handle.get_slice(name)
        self.shape, self.dtype, self.path, self.name = shape, np.dtype(dtype), path, name

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._slice[start:stop])


def _safetensors_header(path: Path) -> dict:
    """Parse and check the header ourselves, so a truncated or foreign file gets a clear message."""
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
        if end > data_len:
            raise AuditInputError(f"{path}: file is truncated (tensor {name!r} runs past the end)")
    return header


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    return dict(_safetensors_header(Path(path)).get("__metadata__") or {})


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


def open_array(path: str | Path, name: str, required: bool = True) -> ArrayReader | None:
    """Open array ``name`` of a file for row-sliced reading.

    A `.npy` file holds a single array, which is taken to be ``name``. Returns None when the
    array is absent and not required.
    """
    path = Path(path)
    suffix = _checked_suffix(path)
    if suffix == ".npy":
        _check_npy_complete(path)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise AuditInputError(f"{path}: not a plain numeric .npy file ({exc})") from None
        except (OSError, EOFError):
            raise AuditInputError(f"{path}: not a readable .npy file (truncated or corrupt)") from None
        return MappedArray(_numeric(array, path, name))
    if suffix == ".npz":
        if f"{name}.npy" not in _npz_members(path):
            return _absent(path, name, required)
        try:
            with np.load(path, allow_pickle=False) as archive:
                array = archive[name]
        except ValueError as exc:
            raise AuditInputError(f"{path}: array {name!r} is not plain numeric data ({exc})") from None
        except (OSError, EOFError, zipfile.BadZipFile):
            raise AuditInputError(f"{path}: not a readable .npz file (truncated or corrupt)") from None
        return InMemoryArray(_numeric(array, path, name))
    header = _safetensors_header(path)
    if name not in header:
        return _absent(path, name, required)
    dtype = _ST_DTYPES.get(header[name].get("dtype"))
    if dtype is None:
        raise AuditInputError(f"{path}: tensor {name!r} has unsupported dtype {header[name].get('dtype')}")
    return SafetensorsArray(path, name, tuple(header[name]["shape"]), dtype)


def _check_npy_complete(path: Path) -> None:
    """Say "truncated" plainly, before numpy's memory map fails with a less helpful message."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            header_end = handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError):
        raise AuditInputError(f"{path}: not a readable .npy file (bad or truncated header)") from None
    if dtype.hasobject:
        return  # not numeric data: open_array refuses it with its own message
    expected = header_end + math.prod(shape) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise AuditInputError(
            f"{path}: file is truncated: the header promises {shape} {dtype} "
            f"({expected} bytes) but the file has {actual}"
        )


def _absent(path: Path, name: str, required: bool) -> None:
    if required:
        raise AuditInputError(f"{path}: no array named {name!r} in this file")
    return None


def _numeric(array: np.ndarray, path: Path, name: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise AuditInputError(f"{path}: array {name!r} has non-numeric dtype {array.dtype}")
    return array


def read_whole(path: str | Path, name: str, required: bool = True) -> np.ndarray | None:
    reader = open_array(path, name, required)
    if reader is None:
        return None
    return np.asarray(reader.read(0, reader.shape[0] if reader.shape else 0))
