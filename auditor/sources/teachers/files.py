"""Teacher files: ``teacher.pt`` (kind ``pca-gmm``) read with ``torch.load(weights_only=True)`` only —
so a file of arbitrary pickled objects is refused before anything in it runs — or, when trusted,
a ``.pt2`` torch.export program; and ``teacher.pt`` written back atomically.

Before ``torch.load`` sees a ``teacher.pt``, it must be at most :data:`MAX_TEACHER_BYTES` and a
zip of stored records (:mod:`auditor.sources.torch_zip`), so that no storage can be larger than
the file.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import torch

from ...errors import AuditInputError
from ...teachers.pca_gmm import PcaGmmTeacher, teacher_from_dict
from ...teachers.search import SearchResult, require_choice, search_record, search_sidecar_path
from ..atomic import atomic_write_bytes, atomic_write_text
from ..hashing import file_record, sha256_file
from ..regular_files import open_input
from ..torch_zip import check_torch_zip, torch_load_weights_only
from .interface import Teacher, TeacherRequest, TeacherSource
from .program import ProgramTeacher, load_program

MAX_TEACHER_BYTES = 1 << 30


def load_teacher(
    path: str | Path, trust_code: bool = False, input_shape: tuple[int, ...] | None = None
) -> PcaGmmTeacher | ProgramTeacher:
    """Load ``teacher.pt`` (pca-gmm) or, when ``trust_code``, a ``.pt2`` torch.export program."""
    path = Path(path)
    if not path.exists():
        raise AuditInputError(f"{path}: no such teacher file")
    if path.suffix.lower() == ".pt2":
        return load_program(path, trust_code, input_shape)
    return teacher_from_dict(_load_weights_only(path), str(path))


def _refusal_reason(exc: Exception) -> str:
    """The unsupported global named in torch's weights-only error, e.g. ``posix.system``."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f"a pickled {match.group(1)}" if match else "pickled objects"


def _load_weights_only(path: Path) -> dict:
    with open_input(path) as handle:
        check_torch_zip(handle, path, "teacher file", MAX_TEACHER_BYTES)
        obj = _torch_load(handle, path)
    if not isinstance(obj, dict):
        raise AuditInputError(f"{path}: a teacher file must hold a dict, found {type(obj).__name__}")
    return obj


def _torch_load(handle, path: Path) -> object:
    try:
        return torch_load_weights_only(handle)
    except pickle.UnpicklingError as exc:
        raise AuditInputError(
            f"{path}: refused to load: the file holds {_refusal_reason(exc)}, not only tensors and plain values "
            "(teachers are read with torch.load(weights_only=True); nothing in the file was run)"
        ) from None
    except Exception as exc:  # corrupt bytes make the weights-only reader raise IndexError, KeyError, struct.error …
        raise AuditInputError(
            f"{path}: not a readable torch file (truncated or corrupt: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]})"
        ) from None


def save_teacher(teacher: PcaGmmTeacher, path) -> None:
    """Write ``teacher.pt`` (exactly the dict of docs/formats.md) atomically."""
    buffer = io.BytesIO()
    torch.save(teacher.to_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_searched_teacher(
    result: SearchResult,
    path: Path,
    *,
    beta: float,
    energy_budget: float,
    seed: int,
    n_init: int,
    data: dict,
    extra: dict | None = None,
) -> dict:
    """The end of a teacher search: the chosen teacher written to ``path`` and the search's record
    (plus ``extra``) to ``<stem>.search.json`` beside it, both atomically. Returns the record."""
    save_teacher(require_choice(result, beta, energy_budget), path)
    record = search_record(
        result.table,
        beta=beta,
        energy_budget=energy_budget,
        seed=seed,
        n_init=n_init,
        data=data,
        teacher_sha256=sha256_file(path),
    )
    atomic_write_text(search_sidecar_path(path), json.dumps({**record, **(extra or {})}, indent=2) + "\n")
    return record


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
