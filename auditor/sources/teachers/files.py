"""Teacher files: ``teacher.pt`` (kind ``pca-gmm``) read with ``torch.load(weights_only=True)`` only —
so a file of arbitrary pickled objects is refused before anything in it runs — or, when trusted,
a ``.pt2`` torch.export program; and ``teacher.pt`` written back atomically.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path

import torch

from ...errors import AuditInputError
from ...teachers.pca_gmm import PcaGmmTeacher, teacher_from_dict
from ..atomic import atomic_write_bytes
from ..hashing import file_record
from .interface import Teacher, TeacherRequest, TeacherSource
from .program import ProgramTeacher, load_program


def load_teacher(
    path: str | Path, trust_code: bool = False, input_shape: tuple[int, ...] | None = None
) -> PcaGmmTeacher | ProgramTeacher:
    """Load ``teacher.pt`` (pca-gmm) or, when ``trust_code``, a ``.pt2`` torch.export program."""
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: no such teacher file")
    if path.suffix.lower() == ".pt2":
        return load_program(path, trust_code, input_shape)
    return teacher_from_dict(_load_weights_only(path), str(path))


def _refusal_reason(exc: Exception) -> str:
    """The unsupported global named in torch's weights-only error, e.g. ``posix.system``."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f"a pickled {match.group(1)}" if match else "pickled objects"


def _load_weights_only(path: Path) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AuditInputError(
            f"{path}: refused to load: the file holds {_refusal_reason(exc)}, not only tensors and plain values "
            "(teachers are read with torch.load(weights_only=True); nothing in the file was run)"
        ) from None
    except Exception as exc:  # corrupt bytes make the weights-only reader raise IndexError, KeyError, struct.error …
        raise AuditInputError(
            f"{path}: not a readable torch file (truncated or corrupt: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]})"
        ) from None
    if not isinstance(obj, dict):
        raise AuditInputError(f"{path}: a teacher file must hold a dict, found {type(obj).__name__}")
    return obj


def save_teacher(teacher: PcaGmmTeacher, path) -> None:
    """Write ``teacher.pt`` (exactly the dict of docs/formats.md) atomically."""
    buffer = io.BytesIO()
    torch.save(teacher.to_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


class TeacherFile(TeacherSource):
    """``--teacher teacher.pt`` (or a trusted ``.pt2``): a module run on the audit data."""

    @staticmethod
    def wanted(request: TeacherRequest) -> bool:
        return request.teacher is not None

    def open(self, request: TeacherRequest, sample_shape: tuple[int, ...] | None) -> Teacher:
        assert request.teacher is not None  # the registry opens a source only for a request it wanted
        module = load_teacher(request.teacher, request.trust_teacher_code, sample_shape).eval()
        record = {
            "kind": module.kind,
            "path": str(request.teacher),
            "temperature": getattr(module, "temperature", None),
        }
        return Teacher(record, [file_record("teacher", request.teacher)], module.num_classes, module=module)
