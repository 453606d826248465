"""``audit verify``'s checks: are the files a certificate names still the same files, and does
re-running the recorded audit give the same numbers?"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ..certificate.attestation import Subject, is_subject_role, recorded_state_dict_digest
from ..certificate.check import request_field_problem
from ..certificate.compare import number_differences
from ..certificate.document import certificate_dict
from ..errors import AuditInputError, shown_text
from ..sources.datasets.image_folder import manifest_sha256
from ..sources.datasets.registry import DATASETS, open_dataset
from ..sources.hashing import file_sha256, resolve_digest
from ..sources.models.arch import is_file_spec, split_arch_spec
from ..sources.models.registry import model_source_for
from ..sources.regular_files import FileRefused
from .pipeline import run_audit
from .request import AuditRequest

BUILTIN_PREFIX = "builtin:"
DATA_ROLES = ("data", "teacher-data")  # the roles whose input may be a folder (an image folder)
# Request fields naming files (resolved against --root) and data specs (files, or built-in names).
_PATH_FIELDS = ("model", "latents", "teacher", "teacher_probs", "view_probs", "witness")
_SPEC_FIELDS = ("data", "teacher_data")


def _resolve(path: str, root: Path | None) -> Path:
    p = Path(path)
    return p if root is None or p.is_absolute() else root / p


def builtin_sha256(path: str) -> str | None:
    """The sha256 recorded for a built-in data set such as ``builtin:digits`` (see :mod:`auditor.sources.datasets.digits`)."""
    name = path[len(BUILTIN_PREFIX) :]
    if name not in DATASETS:
        return None
    records = [r for r in open_dataset(name, "all").inputs if r.path == path]
    # A built-in source is hashed in memory, so this is its digest already (resolve_digest passes it on).
    return resolve_digest(records[0].sha256) if records else None


def input_status(record: dict, root: Path | None) -> str:
    """For one entry of the certificate's ``inputs``: 'ok', 'differs', 'missing', or why the file
    named cannot be hashed — 'not a regular file' (a folder, a FIFO, a device, or a /proc or /sys
    pseudo-file, which claims a size it does not have), 'unreadable', 'changed' (while it was hashed).
    Only regular files are read, and never past the size they had when opened."""
    path = record["path"]
    if path.startswith(BUILTIN_PREFIX):
        actual = builtin_sha256(path)
        if actual is None:
            return "missing"
    else:
        target = _resolve(path, root)
        if target.is_dir() and record["role"] in DATA_ROLES:
            actual = manifest_sha256(target)  # a data folder is recorded by its manifest's sha256
        else:
            try:
                actual = file_sha256(target)  # now, on this thread: never a pending or skipped digest
            except FileRefused as refused:
                return refused.status
    return "ok" if actual == record["sha256"] else "differs"


def subject_statuses(subjects: list[Subject], cert: dict, statuses: list[str]) -> list[str]:
    """The status of each Statement subject: that of the certified model file it names by sha256
    (:func:`auditor.certificate.attestation.check_statement` has made sure there is one)."""
    by_digest = {
        record["sha256"]: status for record, status in zip(cert["inputs"], statuses) if is_subject_role(record["role"])
    }
    return [by_digest[subject.sha256] for subject in subjects]


def recorded_request(cert: dict, root: Path | None, trust_code: bool):
    """The AuditRequest the certificate was made from, with its files resolved against ``root``."""
    recorded = cert.get("request")
    if recorded is None:
        raise AuditInputError(
            "the certificate records no request (it was written by an older version): cannot --recompute"
        )
    known = {f.name for f in fields(AuditRequest)}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise AuditInputError(
            f"the certificate's request has fields this version does not know ({shown_text(', '.join(unknown))}): "
            "cannot --recompute"
        )
    for key, value in recorded.items():  # the types JSON can get wrong, before any is used
        problem = request_field_problem(key, value)
        if problem:
            raise AuditInputError(f"the certificate is invalid: {problem}: cannot --recompute")
    values = dict(recorded)
    if (values.get("arch") or values.get("trust_teacher_code") or values.get("trust_code")) and not trust_code:
        raise AuditInputError(
            "re-running this audit runs code named in the certificate (an --arch factory, a pickled encoder or a "
            ".pt2 teacher); add --trust-code only if you trust those files"
        )
    for key in _PATH_FIELDS:
        if values.get(key) is not None:
            values[key] = _resolve(values[key], root)
    if values.get("arch") is not None:
        target, attribute = split_arch_spec(values["arch"])
        if is_file_spec(target):
            values["arch"] = f"{_resolve(target, root)}:{attribute}"
    if values.get("arch_args") is not None:
        values["arch_args"] = tuple(values["arch_args"])
    for key in _SPEC_FIELDS:
        if values.get(key) is not None and values[key] not in DATASETS:
            values[key] = str(_resolve(values[key], root))
    return AuditRequest(**values)


def recompute_differences(cert: dict, root: Path | None, trust_code: bool) -> list[str]:
    fresh = certificate_dict(run_audit(recorded_request(cert, root, trust_code)), cert["command"])
    return number_differences(cert, fresh)


def weights_status(cert: dict, root: Path | None, trust_code: bool) -> tuple[str, str] | None:
    """Whether the weights of a model built by an ``--arch`` factory are still the certified ones:
    ('ok' | 'differs', what was compared), or None when the model's files identify them (every other source).

    A factory may load weights that no file of the certificate names, so only the state-dict digest
    identifies them, and recomputing it runs the factory: that needs ``trust_code``. Without it, a
    certificate whose weights came from the factory alone cannot be checked (AuditInputError).
    """
    request = cert.get("request") or {}
    if not request.get("arch"):
        return None
    if not trust_code:
        if request.get("model"):
            return None  # the weights file is among the inputs, hashed above
        raise AuditInputError(
            f"cannot re-identify the model without running code: its weights come from the --arch factory "
            f"{request['arch']} and no file of the certificate holds them; add --trust-code to rebuild it and "
            "compare its state-dict digest, only if you trust that code"
        )
    recorded = recorded_state_dict_digest(cert)
    if recorded is None:
        raise AuditInputError(
            "the certificate records no weights digest (written by an older version): cannot compare the weights"
        )
    req = recorded_request(cert, root, trust_code)
    fresh = model_source_for(req).open(req).record["weights_digest"]["sha256"]
    what = f"state-dict digest of {request['arch']}, rebuilt"
    return ("ok" if fresh == recorded else "differs"), what
