"""Atomic writes: a reader (or an interrupted run) sees the old file or the new one, never half of one.

:func:`atomic_write_bytes` replaces one file; :func:`replace_files_together` replaces a set of
files in one folder (the reports of one run) so that a failure while writing any of them leaves
the old set as it was. :func:`folder_problem` says, before any work is done, why a folder could
not take the files at all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import AuditInputError


def _new_file_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_temporary(target: Path, data: bytes) -> Path:
    """``data`` in a new, synced temporary file beside ``target``; nothing left behind on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, _NEW_FILE_MODE)  # mkstemp makes 0600 files; reports and checkpoints are for sharing
        _write_all(fd, data)
        os.fsync(fd)  # a full disk may only say so here (delayed allocation)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    os.close(fd)
    return Path(tmp)


def _sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place.

    A reader (or an interrupted run) never sees a half-written file: either the old
    content or the new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temporary(target, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_files_together(folder: Path, files: dict[str, bytes], remove: Iterable[str] = ()) -> list[Path]:
    """Replace ``folder/name`` by ``data`` for every item of ``files``, all or none; then drop ``remove``.

    Every file is first written and synced under a temporary name in ``folder``; only when all of
    them are written are they renamed into place, in the order of ``files``, after the names in
    ``remove`` (files of an older set that this one does not include) are deleted. A failure
    while writing — a full disk, a permission — removes the temporaries and leaves the folder
    exactly as it was. Each rename is atomic, but a set of renames is not: a crash between two
    of them leaves some files new and some old, each one whole, so callers put the file that
    stands for the set (``certificate.json``) last — when it is new, every file is.
    """
    created = _make_folders(folder)
    temporaries: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            temporaries.append((_write_temporary(folder / name, data), folder / name))
    except BaseException:
        for tmp, _ in temporaries:
            tmp.unlink(missing_ok=True)
        for made in reversed(created):  # folders this call made, empty again
            made.rmdir()
        raise
    try:
        for name in remove:
            if name not in files:
                (folder / name).unlink(missing_ok=True)
        for tmp, target in temporaries:
            os.replace(tmp, target)
    finally:
        for tmp, _ in temporaries:
            tmp.unlink(missing_ok=True)  # only those a failed rename left behind still exist
    _sync_folder(folder)
    return [target for _, target in temporaries]


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and any missing parents; return the ones created, outermost first."""
    missing = []
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    return missing[::-1]


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be written into ``folder`` (created when missing), or None when they can.

    The nearest folder that exists must be a folder, and one where a file can really be created:
    the probe creates and removes an empty temporary file, because permission bits do not tell
    (root ignores them; /proc and read-only mounts refuse whatever they say).
    """
    existing = folder
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if existing == folder:
            return "exists and is not a folder"
        return f"cannot be created: {existing} is not a folder"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".audit-probe-", dir=existing)
    except OSError as exc:
        return f"cannot write into {existing} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(tmp)
    return None


def require_writable_folder(folder: Path, flag: str) -> None:
    """Refuse (AuditInputError, exit 2) an output ``flag`` whose ``folder`` no file can be
    written into: found before any work starts, not after a long run."""
    problem = folder_problem(folder)
    if problem is not None:
        raise AuditInputError(f"{flag} {folder}: {problem}")


def require_writable_file(path: Path, flag: str, example: str | None = None) -> None:
    """Refuse (AuditInputError) an output file ``flag`` that names a folder (``example``: a file
    name to suggest inside it), or whose folder no file can be written into: before any work."""
    if path.is_dir():
        hint = f", e.g. {path / example}" if example else ""
        raise AuditInputError(f"{flag} {path} is a folder; give a file's path{hint}")
    require_writable_folder(path.parent, flag)
