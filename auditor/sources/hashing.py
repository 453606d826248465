"""The sha256 of every file an audit reads, and the record of it that the certificate lists.

Hashing can run on a background thread during the pass (:func:`hashing_in_background`), and is
skipped on torchrun ranks that write no report (:func:`hashing_skipped`). Only regular files are
hashed, exactly the size ``fstat`` gives (a /proc pseudo-file claims 0 bytes and reads on without
end), and the file hashed must be the one the audit opened: its identity is compared with the one
recorded at the first open (:mod:`auditor.sources.regular_files`) before and after hashing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass

from .regular_files import FileIdentity, FileRefused, open_input, open_regular, raise_if_changed, watched_identity

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


_BACKGROUND: ContextVar[_BackgroundHasher | None] = ContextVar("background_hashing", default=None)


def sha256_file(path: str | os.PathLike, expected: FileIdentity | None = None, chunk_size: int = 1 << 20):
    """The regular file's sha256 (hex) — or, inside :func:`hashing_in_background`, a :class:`PendingDigest`.

    With ``expected``, a file that is no longer the one with that identity is refused
    (:class:`~auditor.sources.regular_files.FileRefused`, status "changed").
    """
    return computed_digest(functools.partial(file_sha256, path, expected, chunk_size))


def computed_digest(compute: Callable[[threading.Event | None], str]):
    """``compute(cancelled)``, a digest — run now, on the background hashing thread
    inside :func:`hashing_in_background` (a :class:`PendingDigest`), or not at all where hashing is
    skipped. ``compute`` returns early when the event it is given is set."""
    if not _HASHING.get():
        return HASH_SKIPPED
    background = _BACKGROUND.get()
    if background is not None:
        return background.submit(compute)
    return compute(None)


def sha256_now(path: str | os.PathLike) -> str:
    """The file's sha256 computed at once on this thread, on every rank: for a small file that a
    check needs before the pass (the background hasher may still be busy with the data set)."""
    return file_sha256(path, watched_identity(path))


def file_sha256(
    path, expected: FileIdentity | None = None, chunk_size: int = 1 << 20, cancelled: threading.Event | None = None
) -> str:
    """The regular file's sha256 (hex), read now; "" when ``cancelled`` is set meanwhile. Exactly the
    size ``fstat`` gave is read; with ``expected``, the file must still have that identity."""
    fd, info = open_regular(path)
    opened = FileIdentity.of(info)
    try:
        if expected is not None:
            raise_if_changed(path, expected, opened)
        digest, position = hashlib.sha256(), 0
        while position < opened.size:
            if cancelled is not None and cancelled.is_set():
                return ""
            chunk = os.pread(fd, min(chunk_size, opened.size - position), position)
            if not chunk:
                raise FileRefused(f"{path}: shorter than its size (truncated while hashed)", "changed")
            digest.update(chunk)  # releases the GIL: hashing overlaps the audit's own work
            position += len(chunk)
        # 4096 bytes, not 1: some pseudo-files (/proc/self/pagemap) refuse reads that are not aligned.
        if os.pread(fd, 4096, opened.size):
            raise FileRefused(
                f"{path}: longer than its size (a /proc or /sys pseudo-file, or growing)", "not a regular file"
            )
        raise_if_changed(path, expected or opened, FileIdentity.of(os.fstat(fd)))
    except OSError as exc:
        raise FileRefused(f"{path}: cannot be read to hash it ({exc.strerror or exc})", "unreadable") from None
    finally:
        os.close(fd)
    return digest.hexdigest()


class PendingDigest:
    """A sha256 being computed on a background thread; :func:`resolve_digest` waits for it."""

    def __init__(self, future):
        self._future = future

    def result(self) -> str:
        return self._future.result()


def resolve_digest(value) -> str:
    """A digest from sha256_file, waiting for it when it is still being computed."""
    return value.result() if isinstance(value, PendingDigest) else value


class _BackgroundHasher:
    def __init__(self, thread_setup: Callable[[], None] | None):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-hash", initializer=thread_setup)
        self.cancelled = threading.Event()

    def submit(self, compute: Callable[[threading.Event | None], str]) -> PendingDigest:
        return PendingDigest(self.pool.submit(compute, self.cancelled))

    def close(self) -> None:
        self.cancelled.set()  # an error before the digests were needed: stop reading at once
        self.pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def hashing_in_background(thread_setup: Callable[[], None] | None = None):
    """Within this block sha256_file starts hashing on a worker thread and returns at once.

    Hashing a large data set then overlaps the audit pass instead of preceding it; whatever
    needs the digests calls :func:`resolve_digest` before the block ends. ``thread_setup`` runs
    first on the hashing thread (the audit lowers that thread's priority with it).
    """
    hasher = _BackgroundHasher(thread_setup)
    token = _BACKGROUND.set(hasher)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)
        hasher.close()


@dataclass(frozen=True)
class InputRecord:
    """One file (or built-in source) an audit read, as the certificate lists it."""

    role: str  # e.g. "data", "teacher-data", "model"
    path: str  # the file path, or "builtin:<name>"
    sha256: str | PendingDigest  # a PendingDigest while it is computed in the background


def file_record(role: str, path: str | os.PathLike) -> InputRecord:
    """The record of one file read in ``role``, its sha256 computed (or started) now, of the file
    the audit opened (its identity recorded at the first open; opened here to record it if no
    reader has; the hash compares the file with that identity either way)."""
    if watched_identity(path) is None:  # not opened yet: record it now (a reader's open recorded it already)
        open_input(path).close()
    return InputRecord(role=role, path=str(path), sha256=sha256_file(path, watched_identity(path)))
