"""The header of a ``.safetensors`` file, checked entry by entry before a byte of tensor data is trusted.

The format: 8 bytes (little-endian header length), a JSON object, then the tensor data. Each
tensor entry is ``{"dtype": CODE, "shape": [n, …], "data_offsets": [begin, end]}`` with
``end − begin = prod(shape) · itemsize`` inside the data; ``"__metadata__"`` maps strings to
strings. Limits: a header of at most :data:`MAX_HEADER_BYTES` bytes nested at most
:data:`MAX_HEADER_DEPTH` deep (the JSON of :mod:`auditor.certificate.json_input`), at most
:data:`MAX_DIMENSIONS` dimensions per tensor. Anything else is an :class:`AuditInputError`.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..certificate.json_input import parse_json
from ..errors import AuditInputError, shown
from .regular_files import open_input

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
MAX_HEADER_DEPTH = 4  # {"name": {"shape": [..]}} is 3 deep
MAX_DIMENSIONS = 32

# safetensors dtype codes → bytes per element.
ITEM_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str  # a key of ITEM_BYTES
    shape: tuple[int, ...]
    begin: int  # byte offset in the file
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """The checked header of the ``.safetensors`` file at ``path`` (see the module docstring)."""
    with open_input(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(8)
        if len(head) < 8:
            raise AuditInputError(f"{path}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise AuditInputError(f"{path}: not a safetensors file or truncated (bad header length)")
        raw = handle.read(header_len)
    header = parse_json(raw, f"{path}: safetensors header", MAX_HEADER_BYTES, MAX_HEADER_DEPTH)
    if not isinstance(header, dict):
        raise AuditInputError(f"{path}: not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(value, str) for value in metadata.values())):
        raise AuditInputError(f"{path}: not a safetensors file (__metadata__ must map strings to strings)")
    data_start = 8 + header_len
    tensors = {name: _entry(path, name, info, data_start, size) for name, info in header.items()}
    return SafetensorsHeader(tensors, metadata)


def _entry(path: Path, name: str, info, data_start: int, size: int) -> TensorEntry:
    where = f"{path}: not a safetensors file (tensor {shown(name)}"
    if not isinstance(info, dict):
        raise AuditInputError(f"{where} is not an object)")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not (isinstance(dtype, str) and dtype in ITEM_BYTES):
        raise AuditInputError(f"{where} has unknown dtype {shown(dtype)})")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMENSIONS and all(_count(n) for n in shape)):
        raise AuditInputError(f"{where} has a bad shape {shown(shape)})")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(n) for n in offsets)):
        raise AuditInputError(f"{where} has bad offsets {shown(offsets)})")
    begin, end = offsets
    if begin > end:
        raise AuditInputError(f"{where} has bad offsets {shown(offsets)})")
    if data_start + end > size:
        raise AuditInputError(f"{path}: file is truncated (tensor {shown(name)} runs past the end)")
    if end - begin != math.prod(shape) * ITEM_BYTES[dtype]:
        raise AuditInputError(f"{where}: shape and offsets disagree)")
    return TensorEntry(dtype, tuple(shape), data_start + begin, data_start + end)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of the ``.safetensors`` file at ``path``: strings to strings."""
    return read_safetensors_header(Path(path)).metadata
