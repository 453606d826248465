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


_BACKGROUND: ContextVar["_BackgroundHasher | None"] = ContextVar("background_hashing", default=None)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20):
    """The file's sha256 (hex) — or, inside :func:`hashing_in_background`, a :class:`PendingDigest`."""
    if not _HASHING.get():
        return HASH_SKIPPED
    background = _BACKGROUND.get()
    if background is not None:
        return background.submit(path, chunk_size)
    return _sha256(path, chunk_size)


def _sha256(path, chunk_size: int, cancelled=None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            if cancelled is not None and cancelled.is_set():
                return ""
            digest.update(chunk)  # releases the GIL: hashing overlaps the audit's own work
    return digest.hexdigest()


class PendingDigest:
    """A sha256 being computed on a background thread; :func:`resolve_digest` waits for it."""

    def __init__(self, path, future):
        self.path, self._future = path, future

    def result(self) -> str:
        from ..errors import AuditInputError

        try:
            return self._future.result()
        except OSError as exc:
            raise AuditInputError(f"{self.path}: cannot be read to hash it ({exc.strerror or exc})") from None


def resolve_digest(value) -> str:
    """A digest from sha256_file, waiting for it when it is still being computed."""
    return value.result() if isinstance(value, PendingDigest) else value


class _BackgroundHasher:
    def __init__(self):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from ..audit import helper_threads

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-hash",
                                       initializer=helper_threads.yield_to_forward_passes)
        self.cancelled = threading.Event()

    def submit(self, path, chunk_size: int) -> PendingDigest:
        return PendingDigest(path, self.pool.submit(_sha256, path, chunk_size, self.cancelled))

    def close(self) -> None:
        self.cancelled.set()  # an error before the digests were needed: stop reading at once
        self.pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def hashing_in_background():
    """Within this block sha256_file starts hashing on a worker thread and returns at once.

    Hashing a large data set then overlaps the audit pass instead of preceding it; whatever
    needs the digests calls :func:`resolve_digest` before the block ends.
    """
    hasher = _BackgroundHasher()
    token = _BACKGROUND.set(hasher)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)
        hasher.close()


def _new_file_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place.

    A reader (or an interrupted run) never sees a half-written file: either the old
    content or the new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.chmod(tmp, _NEW_FILE_MODE)  # mkstemp makes 0600 files; reports and checkpoints are for sharing
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
