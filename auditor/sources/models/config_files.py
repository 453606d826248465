"""The small JSON files that describe a saved model (diffusers' ``config.json``, pythae's
``model_config.json``): read only when small, and only when they hold a JSON object."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import AuditInputError, describe
from ..regular_files import read_input

MAX_CONFIG_BYTES = 1 << 24  # 16 MiB: real configs and shard indexes are kilobytes


def read_config(path: Path) -> dict:
    """The JSON object in ``path``; anything else (missing, too large, not JSON, not an object) is refused."""
    if not path.is_file():
        raise AuditInputError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise AuditInputError(f"{path}: {size} bytes is too large for a model config (at most {MAX_CONFIG_BYTES})")
    try:
        # Read as a checked input: a regular file, no further than its size (a /proc file claims 0 bytes).
        value = json.loads(read_input(path, MAX_CONFIG_BYTES, "a model config"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AuditInputError(f"{path}: not a readable JSON file ({describe(exc)})") from None
    if not isinstance(value, dict):
        raise AuditInputError(f"{path}: must hold a JSON object, found {type(value).__name__}")
    return value
