"""The small JSON files that describe a saved model (diffusers' ``config.json``, pythae's
``model_config.json``): read only when small, and only when they hold a JSON object."""

from __future__ import annotations

from pathlib import Path

from ...certificate.json_input import parse_json
from ...errors import AuditInputError
from ..regular_files import read_input

MAX_CONFIG_BYTES = 1 << 24  # 16 MiB: real configs and shard indexes are kilobytes
MAX_CONFIG_DEPTH = 64  # diffusers and pythae configs nest a few levels


def read_config(path: Path) -> dict:
    """The JSON object in ``path``; anything else (missing, too large, not JSON, not an object) is refused."""
    # Read as a checked input: a regular file of at most MAX_CONFIG_BYTES, read no further than its
    # size (a /proc file claims 0 bytes).
    value = parse_json(
        read_input(path, MAX_CONFIG_BYTES, "a model config"), str(path), MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH
    )
    if not isinstance(value, dict):
        raise AuditInputError(f"{path}: must hold a JSON object, found {type(value).__name__}")
    return value
