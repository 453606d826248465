"""What a ``torch.save`` file must be before ``torch.load`` reads it (a zip of stored records),
and the weights-only read itself.

``torch.load`` inflates a deflated record whole (``torch.save`` never writes one: 3 MB can claim
3 GB), and in the legacy (non-zip) format, written before PyTorch 1.6, it allocates each storage
at the size the pickle claims before reading it. A zip of stored records, each inside the file
(:func:`~auditor.sources.zip_member.zip_records`), bounds every storage by the file's size: torch
refuses a storage whose size differs from its record's. Teachers (``teacher.pt``), model
checkpoints (``.pt``, ``.pth``, ``.ckpt``) and the trainer's resume files are all checked here,
and read by :func:`torch_load_weights_only`.
"""

from __future__ import annotations

import os
import warnings
from io import BufferedReader
from pathlib import Path
from typing import Any

import torch

from ..errors import AuditInputError, shown
from .zip_member import LOCAL_HEADER_MAGIC, zip_records


def check_torch_zip(handle: BufferedReader, path: Path, what: str, max_bytes: int | None = None) -> None:
    """Refuse ``handle`` (an open ``what``: "teacher file", "checkpoint") unless it is a zip of stored
    records of at most ``max_bytes`` in all; leaves the handle at an undefined position."""
    size = os.fstat(handle.fileno()).st_size
    if max_bytes is not None and size > max_bytes:
        raise AuditInputError(f"{path}: {size} bytes, more than the {max_bytes}-byte limit for a {what}")
    handle.seek(0)
    if handle.read(4) != LOCAL_HEADER_MAGIC:
        raise AuditInputError(
            f"{path}: refused to load: not a {what} in torch's zip format (torch.save's format since PyTorch "
            "1.6); older files are never unpickled, as their sizes cannot be checked before torch allocates "
            "them (re-save it where you trust it: torch.save(torch.load(old, weights_only=True), new))"
        )
    compressed = [record.name for record in zip_records(handle, str(path)).values() if record.deflated]
    if compressed:
        raise AuditInputError(
            f"{path}: not a readable torch file (record {shown(compressed[0])} is compressed, which torch.save never does)"
        )


def torch_load_weights_only(handle: BufferedReader) -> Any:
    """``torch.load(weights_only=True)`` of a file :func:`check_torch_zip` passed, from its start,
    onto the CPU. torch's warnings about pickle protocols, given before it refuses a global, are
    silenced: the caller turns the refusal into its own one-line error."""
    handle.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(handle, map_location="cpu", weights_only=True)
