"""The seam for teacher sources: where an audit's teacher probabilities p_i = T(·|x_i) come from.

A teacher source turns what the user named — a ``teacher.pt``, a trusted ``.pt2`` program,
precomputed probabilities — into a :class:`Teacher`: a module run on the data, or an N×K array.
Each source is one class implementing :class:`TeacherSource`, listed in
:mod:`auditor.sources.teachers.registry`; a new kind of teacher is one class and its tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from torch import nn

from ..arrays import ArrayReader
from ..hashing import InputRecord


class TeacherRequest(Protocol):
    """The fields of an audit request that teacher sources read."""

    teacher: Path | None
    teacher_probs: Path | None
    trust_teacher_code: bool
    limit: int | None


@dataclass
class Teacher:
    """What a teacher source hands the audit: exactly one of ``module`` (x → B×K probabilities)
    and ``rows`` (precomputed ``probs``)."""

    record: dict  # the certificate's "teacher" entry
    inputs: list[InputRecord]
    num_classes: int
    module: nn.Module | None = None
    rows: dict[str, ArrayReader] = field(default_factory=dict)


class TeacherSource(ABC):
    needs_data = True  # whether the teacher runs on the audit data (precomputed probabilities do not)

    @staticmethod
    @abstractmethod
    def wanted(request: TeacherRequest) -> bool:
        """Whether ``request`` names this kind of teacher."""

    @abstractmethod
    def open(self, request: TeacherRequest, sample_shape: tuple[int, ...] | None) -> Teacher:
        """Read and check the teacher (on the CPU) for samples of ``sample_shape``."""
