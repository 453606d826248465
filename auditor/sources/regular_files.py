"""Opening the user's files: regular files only, never blocking, and the same file for a whole audit.

:func:`open_input` is how every reader in ``sources/`` opens a file it was named:

- ``os.stat`` first refuses directories, FIFOs, sockets and devices without opening them
  (opening some devices has effects of its own: a tape rewinds, a watchdog starts);
- the open uses ``O_NONBLOCK``, so a FIFO swapped in after that ``stat`` cannot hang it;
- ``fstat`` of the *open descriptor* decides, so what is checked is what is read (no gap between
  a check and the use for a rename to slip into).

Inside :func:`watching_inputs` — an audit runs in one — the first open of each path records the
descriptor's :class:`FileIdentity` (device, inode, size, mtime, ctime). Every later open of the
path, the hash of it (:mod:`auditor.sources.hashing`) and :func:`check_inputs_unchanged` at the
end of the audit compare against that record, so a certificate never pairs the sha256 of one
content with numbers computed from another:

- any write, truncation, ``chmod`` or ``utime`` moves the ctime, which unlike the mtime no user
  program can set back; a rename over the path changes the inode the path names;
- on kernels that stamp ctime from a coarse clock (Linux before 6.13: one tick, 4 ms at HZ=250),
  two writes within one tick leave the same ctime, so the first open waits, at most about two
  ticks, until the tick of the file's last change is over.

Not covered: file systems whose timestamps are coarser than the clock (1 s on ext3, 2 s on FAT),
writes through an already-dirty shared memory map (the ctime moves at the page's next write
fault, not at each store), network file systems that cache attributes, and root, who can set
the clock or edit an inode.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from io import BufferedReader

from ..errors import AuditInputError, shown_text

# time has no name for it; 5 is Linux's CLOCK_REALTIME_COARSE, the clock file times are stamped from.
# (Elsewhere the wait below is for the finest clock's tick, which is no wait at all.)
_COARSE_CLOCK = 5 if sys.platform.startswith("linux") else getattr(time, "CLOCK_REALTIME", 0)
_TICK_S = time.clock_getres(_COARSE_CLOCK) if hasattr(time, "clock_getres") else 0.0
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


class FileRefused(AuditInputError):
    """A named file that cannot be read as the input it should be; ``status`` says why in a word
    or four (``audit verify`` prints it): missing, not a regular file, unreadable, changed."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FileIdentity:
    """What says that a file is still the one that was opened."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> FileIdentity:
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def differences(self, other: FileIdentity) -> list[str]:
        if (self.device, self.inode) != (other.device, other.inode):
            return ["replaced by another file"]
        return [name for name in ("size", "mtime_ns", "ctime_ns") if getattr(self, name) != getattr(other, name)]


# Path (absolute, as named) → identity at its first open, within watching_inputs().
_WATCHED: ContextVar[dict[str, FileIdentity] | None] = ContextVar("watched_inputs", default=None)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"


def open_regular(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """A read-only descriptor of the regular file at ``path`` and its ``fstat``; FileRefused otherwise."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefused(f"{path}: not a regular file ({_kind(mode)})", "not a regular file")
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise FileRefused(f"{path}: no such file", "missing") from None
    except ValueError:  # a NUL byte, or a character the file system cannot encode
        raise FileRefused(f"{shown_text(str(path))}: not a valid file name", "missing") from None
    except OSError as exc:
        raise FileRefused(f"{path}: cannot be opened ({exc.strerror or exc})", "unreadable") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # replaced between the stat and the open
        os.close(fd)
        raise FileRefused(f"{path}: not a regular file ({_kind(info.st_mode)})", "not a regular file")
    return fd, info


def open_input(path: str | os.PathLike) -> BufferedReader:
    """The regular file at ``path``, open for binary reading (see the module docstring)."""
    fd, info = open_regular(path)
    try:
        _compare_or_record(path, fd, info)
        return open(fd, "rb")  # noqa: SIM115  # the caller closes it
    except BaseException:
        os.close(fd)
        raise


def _compare_or_record(path: str | os.PathLike, fd: int, info: os.stat_result) -> None:
    watched = _WATCHED.get()
    if watched is None:
        return
    key = os.path.abspath(path)
    if key in watched:
        raise_if_changed(path, watched[key], FileIdentity.of(info))
    else:
        watched[key] = FileIdentity.of(_settled(fd, info))


def _settled(fd: int, info: os.stat_result) -> os.stat_result:
    """The descriptor's stat once the clock tick of the file's last change is over (see the docstring)."""
    deadline = time.monotonic() + 2 * _TICK_S + 0.002
    while _TICK_S and time.clock_gettime_ns(_COARSE_CLOCK) <= info.st_ctime_ns and time.monotonic() < deadline:
        time.sleep(_TICK_S)
        info = os.fstat(fd)
    return info


def raise_if_changed(path: str | os.PathLike, recorded: FileIdentity, now: FileIdentity) -> None:
    changed = recorded.differences(now)
    if changed:
        raise FileRefused(
            f"{path}: changed during the audit ({', '.join(changed)}); the certificate would not describe "
            "the bytes that were audited. Audit files that nothing writes to.",
            "changed",
        )


def watched_identity(path: str | os.PathLike) -> FileIdentity | None:
    """The identity recorded at the first open of ``path`` in this audit, if any."""
    watched = _WATCHED.get()
    return None if watched is None else watched.get(os.path.abspath(path))


@contextlib.contextmanager
def watching_inputs():
    """Within this block every input's identity is recorded at its first open (module docstring)."""
    token = _WATCHED.set({})
    try:
        yield
    finally:
        _WATCHED.reset(token)


def check_inputs_unchanged() -> None:
    """Raise FileRefused for any file opened in this watch that the path no longer names unchanged."""
    for key, recorded in (_WATCHED.get() or {}).items():
        try:
            now = FileIdentity.of(os.stat(key))
        except OSError:
            raise FileRefused(f"{key}: removed during the audit", "changed") from None
        raise_if_changed(key, recorded, now)


def read_input(path: str | os.PathLike, max_bytes: int, what: str) -> bytes:
    """The whole regular file at ``path`` (``what`` it should be), refused unread when over ``max_bytes``.

    Exactly the size ``fstat`` gave is read, into one buffer allocated after the check; a file
    that yields more (a /proc pseudo-file's size is 0) or fails to read is refused.
    """
    with open_input(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise AuditInputError(f"{path}: {size} bytes, more than the {max_bytes}-byte limit for {what}")
        try:
            data, longer = handle.read(size), bool(handle.read(1))
        except OSError as exc:
            raise FileRefused(f"{path}: cannot be read ({exc.strerror or exc})", "unreadable") from None
    if len(data) < size:
        raise FileRefused(f"{path}: shorter than its size (truncated while it was read)", "changed")
    if longer:
        raise FileRefused(f"{path}: longer than its size (a pseudo-file, or growing)", "not a regular file")
    return data
