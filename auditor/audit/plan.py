"""What one pass reads and runs: aligned row sources under fixed roles, and the modules to apply.

Roles: ``x`` (the encoder's inputs), ``x_teacher`` (the teacher's view of the same samples), ``mu``
and ``logvar`` (precomputed latents), ``probs`` and ``view_probs`` (precomputed teacher outputs).
What is not given is computed: μ by the encoder on ``x``; p by the teacher on ``x_teacher`` (or
``x``); p' by the teacher on ``x`` when a view gap is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import AuditInputError
from ..sources.arrays import ArrayReader
from ..sources.models.encode import EncodeRecord

ROLES = ("x", "x_teacher", "mu", "logvar", "probs", "view_probs")


@dataclass
class PassPlan:
    sources: dict[str, ArrayReader]
    encoder: nn.Module | None = None
    teacher: nn.Module | None = None
    with_view: bool = False
    input_shape: tuple[int, ...] | None = None  # the encoder's input shape, when it differs from the data's
    encode_record: EncodeRecord | None = None  # how μ is read from the encoder's output: every batch must agree
    num_samples: int = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.sources) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown source roles {sorted(unknown)}")
        sizes = {role: int(src.shape[0]) for role, src in self.sources.items()}
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{r}: {n}" for r, n in sizes.items())
            raise AuditInputError(f"inputs do not have the same number of samples ({detail})")
        self.num_samples = next(iter(sizes.values())) if sizes else 0
