"""The ``.npy`` header — of a ``.npy`` file or of an ``.npz`` member — and the dtypes arrays may hold.

The header is parsed by numpy's own reader (a literal dict, at most 10,000 bytes), then checked
here: a shape of at most :data:`MAX_DIMENSIONS` non-negative sizes and one of the plain numeric
dtypes of :data:`NUMERIC_CODES` in either byte order. Everything else — objects, strings,
structured and sub-array dtypes, complex numbers, dates, and ``longdouble``, which has no torch
counterpart — is an :class:`AuditInputError` naming the array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import AuditInputError, shown

MAX_DIMENSIONS = 32
# bool, unsigned and signed integers, IEEE floats: what torch.from_numpy takes.
NUMERIC_CODES = frozenset({"b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8"})


@dataclass(frozen=True)
class NpyLayout:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_bytes: int  # magic, header length and header: where the data start

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_layout(stream: BinaryIO, where: str) -> NpyLayout:
    """The layout of the ``.npy`` data starting at ``stream``'s position; ``where`` names the array."""
    start = stream.tell()
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except Exception:  # numpy's tokenizer, literal parser and dtype constructor raise many types on
        # garbage (ValueError, SyntaxError, tokenize.TokenError, KeyError …); none runs code from the file
        raise AuditInputError(f"{where}: bad or truncated .npy header") from None
    if len(shape) > MAX_DIMENSIONS or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise AuditInputError(f"{where}: bad shape {shown(shape)} in the .npy header")
    check_numeric(dtype, where)
    return NpyLayout(tuple(shape), dtype, bool(fortran_order), stream.tell() - start)


def check_numeric(dtype: np.dtype, where: str) -> None:
    if dtype.str[1:] not in NUMERIC_CODES:
        held = "Python objects" if dtype.hasobject else f"non-numeric dtype {shown(str(dtype))}"
        raise AuditInputError(
            f"{where} holds {held}; arrays hold plain numbers (bool, integers, 16-, 32- or 64-bit floats)"
        )
