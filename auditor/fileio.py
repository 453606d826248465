"""File helpers shared by every writer and reader: hashing and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from contextvars import ContextVar
from pathlib import Path

# Ranks other than 0 of a distributed audit write no report, so they need no input hashes.
HASH_SKIPPED = "not hashed on this rank"
_HASHING = ContextVar("hashing", default=True)


@contextlib.contextmanager
def hashing_skipped():
    """Within this block sha256_file returns HASH_SKIPPED without reading the file."""
    token = _HASHING.set(False)
    try:
        yield
    finally:
        _HASHING.reset(token)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    if not _HASHING.get():
        return HASH_SKIPPED
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place.

    A reader (or an interrupted run) never sees a half-written file: either the old
    content or the new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
