"""Every teacher source, in the order each is asked whether a request is its own."""

from __future__ import annotations

from ...errors import AuditInputError
from .files import TeacherFile
from .interface import TeacherRequest, TeacherSource
from .probabilities import Probabilities

TEACHER_SOURCES: tuple[TeacherSource, ...] = (TeacherFile(), Probabilities())


def teacher_source_for(request: TeacherRequest) -> TeacherSource:
    for source in TEACHER_SOURCES:
        if source.wanted(request):
            return source
    raise AuditInputError("give exactly one of --teacher or --teacher-probs")
