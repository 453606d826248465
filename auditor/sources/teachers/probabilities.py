"""Precomputed teacher probabilities: an N×K array ``probs`` (validated row by row during the audit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import AuditInputError
from ..arrays import ArrayReader, first_rows, open_array
from ..hashing import file_record
from .interface import Teacher, TeacherRequest, TeacherSource


def open_probabilities(path: str | Path, name: str = "probs") -> ArrayReader:
    """Precomputed teacher probabilities, an N×K array (validated row by row during the audit)."""
    reader = open_array(path, name)
    if len(reader.shape) != 2 or reader.shape[1] < 2:
        raise AuditInputError(f"{path}: {name!r} must be an N×K array with K >= 2, found shape {reader.shape}")
    if np.dtype(reader.dtype).kind != "f":
        raise AuditInputError(f"{path}: {name!r} must hold floating-point probabilities, found {reader.dtype}")
    return reader


class Probabilities(TeacherSource):
    """``--teacher-probs FILE``: the teacher's probabilities computed beforehand."""

    needs_data = False

    @staticmethod
    def wanted(request: TeacherRequest) -> bool:
        return request.teacher_probs is not None

    def open(self, request: TeacherRequest, sample_shape: tuple[int, ...] | None) -> Teacher:
        assert request.teacher_probs is not None  # the registry opens a source only for a request it wanted
        probs = open_probabilities(request.teacher_probs, "probs")
        record = {"kind": "probabilities", "path": str(request.teacher_probs)}
        return Teacher(
            record,
            [file_record("teacher-probs", request.teacher_probs)],
            int(probs.shape[1]),
            rows={"probs": first_rows(probs, request.limit)},
        )
