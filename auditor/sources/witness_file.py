"""``witness.json``: the witness settings chosen at design time, in one small file (docs/formats.md).

``audit design --witness-out`` and ``audit teacher search`` write it; a training loop reads it
(:func:`load_witness`) to build its :class:`~auditor.training.losses.AlignmentLoss` and monitor, and
``audit certify --witness`` reads it instead of ``--num-classes/--beta/--witness-offset``. The file
is checked like any other input before a value in it is used: its size, that it is one JSON object
with no repeated key and no unknown one, the schema name, and the type and range of every value.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..certificate.json_input import is_json_int, is_json_number, parse_json
from ..certificate.witness import WitnessSpec
from ..errors import AuditInputError
from .atomic import atomic_write_text
from .regular_files import read_input

SCHEMA = "vae-audit-witness/1"
# A witness file is a handful of numbers; anything much larger is not one (and is not read).
MAX_BYTES = 64 * 1024
MAX_DEPTH = 8  # a witness file is one flat object
_REQUIRED = ("schema", "num_classes", "beta", "offset")
_OPTIONAL = ("latent_dim", "teacher_sha256")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WitnessSettings:
    """K, β and the offset of the witness; the latent dimension d and the teacher's sha256 when known."""

    num_classes: int
    beta: float
    offset: int = 0
    latent_dim: int | None = None
    teacher_sha256: str | None = None

    def __post_init__(self) -> None:
        # WitnessSpec holds the rules for K, β, offset and d; d defaults to the least the witness needs.
        least = self.offset + self.num_classes - 1
        WitnessSpec(self.num_classes, least if self.latent_dim is None else self.latent_dim, self.beta, self.offset)
        if self.teacher_sha256 is not None and not _SHA256.fullmatch(self.teacher_sha256):
            raise AuditInputError(f"teacher_sha256 must be 64 lowercase hex digits, got {self.teacher_sha256!r:.80}")

    def as_dict(self) -> dict:
        """The file's JSON object: the schema first, optional keys only when known."""
        out: dict = {"schema": SCHEMA, "num_classes": self.num_classes, "beta": self.beta, "offset": self.offset}
        if self.latent_dim is not None:
            out["latent_dim"] = self.latent_dim
        if self.teacher_sha256 is not None:
            out["teacher_sha256"] = self.teacher_sha256
        return out


def save_witness(path: str | Path, settings: WitnessSettings) -> None:
    """Write ``settings`` as ``witness.json`` atomically."""
    atomic_write_text(path, json.dumps(settings.as_dict(), indent=2) + "\n")


def load_witness(path: str | Path) -> WitnessSettings:
    """Read and check ``witness.json``; anything wrong with it raises AuditInputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: no such witness file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise AuditInputError(f"{path}: {size} bytes is too large for a witness file (at most {MAX_BYTES})")
    # Read as a checked input: a regular file, no further than its size (a /proc file claims 0 bytes).
    obj = parse_json(read_input(path, MAX_BYTES, "a witness file"), f"{path}: witness file", MAX_BYTES, MAX_DEPTH)
    if not isinstance(obj, dict):
        raise AuditInputError(f"{path}: a witness file holds one JSON object, found {type(obj).__name__}")
    if obj.get("schema") != SCHEMA:
        raise AuditInputError(f"{path}: schema must be {SCHEMA!r}, found {obj.get('schema')!r:.80}")
    missing = [key for key in _REQUIRED if key not in obj]
    unknown = sorted(set(obj) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise AuditInputError(
            f"{path}: missing keys: {', '.join(missing) or 'none'}; unknown keys: {', '.join(map(repr, unknown[:4])) or 'none'}"
        )
    latent_dim, sha = obj.get("latent_dim"), obj.get("teacher_sha256")
    if not (
        is_json_int(obj["num_classes"])
        and is_json_int(obj["offset"])
        and (latent_dim is None or is_json_int(latent_dim))
    ):
        raise AuditInputError(f"{path}: num_classes, offset and latent_dim must be integers")
    if not (is_json_number(obj["beta"]) and math.isfinite(obj["beta"])):
        raise AuditInputError(f"{path}: beta must be a finite number, found {obj['beta']!r:.80}")
    if sha is not None and not isinstance(sha, str):
        raise AuditInputError(f"{path}: teacher_sha256 must be a string")
    try:
        return WitnessSettings(obj["num_classes"], float(obj["beta"]), obj["offset"], latent_dim, sha)
    except AuditInputError as exc:
        raise AuditInputError(f"{path}: {exc}") from None
