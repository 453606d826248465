"""Where a certificate's relative paths start: its ``paths_relative_to`` key.

``audit certify`` records input paths as they were given, relative to the folder it ran in. A
pipeline verifies later, from another folder or in another checkout, so the certificate also
records that folder *relative to the folder the certificate is written into* (``"../.."`` for
``reports/vae/certificate.json`` written from the repository root). Wherever the repository is
checked out and whichever folder ``audit verify`` runs from, the certificate's own location then
leads back to the inputs. A certificate without the key (written before it existed) keeps the
old rule: relative paths start from the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

KEY = "paths_relative_to"


def paths_relative_to(out_dir: str | os.PathLike, start: str | os.PathLike | None = None) -> str:
    """The value to record for a certificate written into ``out_dir`` whose relative paths start at
    ``start`` (default: the current folder): a ``/``-separated path relative to ``out_dir``, or an
    absolute one where there is no relative path (another drive on Windows)."""
    origin = Path(start if start is not None else Path.cwd()).resolve()
    try:
        return PurePath(os.path.relpath(origin, Path(out_dir).resolve())).as_posix()
    except ValueError:
        return origin.as_posix()


def input_base(cert: dict, document: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The folder the relative paths of ``cert`` (read from the file ``document``) start from:
    ``root`` when given, else the one its ``paths_relative_to`` names, else the current folder."""
    return input_base_and_origin(cert, document, root)[0]


def input_base_and_origin(
    cert: dict, document: str | os.PathLike, root: str | os.PathLike | None = None
) -> tuple[Path, str]:
    """:func:`input_base`, and where it came from, in words (what ``audit verify`` prints)."""
    if root is not None:
        return Path(root).resolve(), "--root"
    recorded = cert.get(KEY)
    if isinstance(recorded, str):
        return (
            Path(document).resolve().parent / recorded
        ).resolve(), f"the certificate's {KEY} {recorded!r}, from its folder"
    return Path.cwd(), f"the current folder: the certificate records no {KEY}"


def rebased(cert: dict, document: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """``cert`` (read from ``document``) as written into ``out_dir``: the same inputs, reached from there."""
    if KEY not in cert:
        return cert
    return {**cert, KEY: paths_relative_to(out_dir, start=input_base(cert, document))}
