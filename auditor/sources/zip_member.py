"""Members of zip files (``.npz`` arrays, the records of a ``teacher.pt``), sized before they are read.

``np.load(npz)[name]`` allocates what a member's ``.npy`` header claims before reading a byte,
and inflates a deflated member whole before its shape can be looked at: 246 bytes can claim
10¹³ elements, 1.5 MB of zeros can inflate to gigabytes. Here nothing is allocated from a claim:

- :func:`zip_records` reads the central directory (Python's :mod:`zipfile`, which refuses one
  that does not fit in the file) and checks each member's *local* header by hand: one entry per
  name, not encrypted, stored or deflated, its data inside the file, the same name in both
  headers, a stored member's two sizes equal;
- :func:`member_head` returns at most the first :data:`HEAD_BYTES` bytes of a member, inflating
  no more than that, so that the caller can parse a ``.npy`` header and compare what it
  claims with the zip's declared size before deciding to read anything else;
- :func:`read_member` reads bytes ``[skip, skip + count)`` of a member into a buffer of exactly
  ``count`` bytes, inflating in 1 MiB steps with a hard cap on the output, and refuses a stream
  that inflates to more or less than the zip declared, or whose CRC-32 does not match.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from io import BufferedReader

import numpy as np

from ..errors import AuditInputError, shown

HEAD_BYTES = 64 << 10
LOCAL_HEADER_MAGIC = b"PK\x03\x04"  # the first bytes of every local header, hence of a zip file
_LOCAL_HEADER = struct.Struct(
    "<4s5H3I2H"
)  # signature, version, flags, method, time, date, crc, sizes, name/extra lengths
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipRecord:
    name: str
    deflated: bool
    crc: int
    data_offset: int  # where the member's (compressed) bytes start in the file
    compressed_size: int
    size: int


def zip_records(handle: BufferedReader, where: str) -> dict[str, ZipRecord]:
    """Every member of the zip open as ``handle``, checked as the module docstring says."""
    file_size = os.fstat(handle.fileno()).st_size
    try:
        infos = zipfile.ZipFile(handle).infolist()
    # NotImplementedError: a "version needed to extract" that zipfile does not know (found by fuzzing)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        OSError,
        EOFError,
        ValueError,
        struct.error,
        UnicodeError,
    ):
        raise AuditInputError(f"{where}: not a readable zip file (truncated or corrupt)") from None
    records: dict[str, ZipRecord] = {}
    for info in infos:
        name = shown(info.filename)
        if info.filename in records:
            raise AuditInputError(f"{where}: member {name} appears twice in the zip directory")
        if info.flag_bits & 0x1:
            raise AuditInputError(f"{where}: member {name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise AuditInputError(
                f"{where}: member {name} is compressed with method {info.compress_type} (only stored or deflated)"
            )
        local = _local_header(handle, info.header_offset, file_size)
        if local is None:
            raise AuditInputError(f"{where}: member {name} has no local header (corrupt zip)")
        name_length, extra_length = _LOCAL_HEADER.unpack(local)[9:]
        if handle.read(name_length) != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
            raise AuditInputError(f"{where}: member {name} has different names in its two headers (corrupt zip)")
        data_offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        if data_offset + info.compress_size > file_size:
            raise AuditInputError(f"{where}: member {name} runs past the end of the file (truncated)")
        stored = info.compress_type == zipfile.ZIP_STORED
        if stored and info.compress_size != info.file_size:
            raise AuditInputError(f"{where}: stored member {name} declares two different sizes (corrupt zip)")
        records[info.filename] = ZipRecord(
            info.filename, not stored, info.CRC, data_offset, info.compress_size, info.file_size
        )
    return records


def _local_header(handle: BufferedReader, offset: int, file_size: int) -> bytes | None:
    """The fixed part of the local header at ``offset``, or None if there is none (zipfile may
    compute a negative offset or one past the end for a damaged directory)."""
    if not 0 <= offset <= file_size - _LOCAL_HEADER.size:
        return None
    handle.seek(offset)
    local = handle.read(_LOCAL_HEADER.size)
    return local if local[:4] == LOCAL_HEADER_MAGIC else None


def member_head(handle: BufferedReader, record: ZipRecord, where: str) -> bytes:
    """The first (at most :data:`HEAD_BYTES`) bytes of the member, inflating no more than that."""
    limit = min(HEAD_BYTES, record.size)
    handle.seek(record.data_offset)
    if not record.deflated:
        return handle.read(limit)
    inflater, head, left = zlib.decompressobj(-15), b"", record.compressed_size
    while len(head) < limit and left and not inflater.eof:
        chunk = handle.read(min(1 << 16, left))
        left -= len(chunk)
        try:
            head += inflater.decompress(inflater.unconsumed_tail + chunk, limit - len(head))
        except zlib.error:
            raise AuditInputError(f"{where}: corrupt deflate stream") from None
    return head


def read_member(handle: BufferedReader, record: ZipRecord, skip: int, count: int, where: str) -> np.ndarray:
    """Bytes [skip, skip + count) of the member, which must end exactly there, as a uint8 array of its own."""
    if skip + count != record.size:
        raise AuditInputError(f"{where}: the member holds {record.size - skip} bytes of data, not {count}")
    out = np.empty(count, dtype=np.uint8)
    view = out.data
    handle.seek(record.data_offset)
    if record.deflated:
        crc = _inflate_into(handle, record, skip, view, where)
    else:
        crc = zlib.crc32(handle.read(skip))
        done = 0
        while done < count and (got := handle.readinto(view[done:])):
            done += got
        if done != count:
            raise AuditInputError(f"{where}: truncated (the file ended inside the member)")
        crc = zlib.crc32(view, crc)
    if crc != record.crc:
        raise AuditInputError(f"{where}: CRC-32 mismatch (a corrupt member)")
    return out


def _inflate_into(handle: BufferedReader, record: ZipRecord, skip: int, view: memoryview, where: str) -> int:
    inflater = zlib.decompressobj(-15)
    left, done, crc, pending = record.compressed_size, 0, 0, b""
    while not inflater.eof:
        if not pending:
            if not left:
                break
            pending = handle.read(min(_CHUNK, left))
            left -= len(pending)
            if not pending:
                break
        # Never more output than the bytes still expected, plus one to notice a stream that runs over.
        try:
            out = inflater.decompress(pending, skip + len(view) - done + 1)
        except zlib.error:
            raise AuditInputError(f"{where}: corrupt deflate stream") from None
        pending = inflater.unconsumed_tail
        crc = zlib.crc32(out, crc)
        if skip:
            cut = min(skip, len(out))
            skip, out = skip - cut, out[cut:]
        if len(out) > len(view) - done:
            raise AuditInputError(f"{where}: the member inflates to more than its declared size (corrupt zip)")
        view[done : done + len(out)] = out
        done += len(out)
    if done != len(view) or skip or not inflater.eof:
        raise AuditInputError(f"{where}: the member inflates to less than its declared size (truncated)")
    return crc
