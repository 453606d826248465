"""``audit verify certificate.json [--recompute]``: are the certified files still the same files?

Exit 0 when every input named in the certificate still has its recorded sha256 (and, with
``--recompute``, re-running the recorded audit gives every number again to 1e-9 relative);
exit 1 when any input differs or is missing, or a recomputed number differs; exit 2 when the
certificate itself is invalid (see :mod:`auditor.certificate_check`) or cannot be re-run.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from ..certificate.check import load_certificate
from ..sources.datasets.dataset import DATASETS, open_dataset
from ..errors import AuditInputError
from ..sources.hashing import sha256_file

RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_FLOOR = 1e-12  # numbers that are 0 up to float64 rounding compare equal
BUILTIN_PREFIX = "builtin:"
# Request fields naming files (resolved against --root) and data specs (files, or built-in names).
_PATH_FIELDS = ("model", "latents", "teacher", "teacher_probs", "view_probs")
_SPEC_FIELDS = ("data", "teacher_data")
# Not numbers of the audit: how it was asked for, and where the files were.
_NOT_COMPARED = ("request", "command", "tool_version", "inputs")


def _resolve(path: str, root: Path | None) -> Path:
    p = Path(path)
    return p if root is None or p.is_absolute() else root / p


def builtin_sha256(path: str) -> str | None:
    """The sha256 that ``auditor.data`` records for a built-in source such as ``builtin:digits``."""
    name = path[len(BUILTIN_PREFIX):]
    if name not in DATASETS:
        return None
    records = [r for r in open_dataset(name, "all").inputs if r.path == path]
    return records[0].sha256 if records else None


def input_status(record: dict, root: Path | None) -> str:
    """'ok', 'differs' or 'missing' for one entry of the certificate's ``inputs``."""
    path = record["path"]
    if path.startswith(BUILTIN_PREFIX):
        actual = builtin_sha256(path)
    else:
        target = _resolve(path, root)
        actual = sha256_file(target) if target.is_file() else None
    if actual is None:
        return "missing"
    return "ok" if actual == record["sha256"] else "differs"


def number_differences(stored, fresh, where: str = "") -> list[str]:
    """Every number (and the verdict) that differs between two certificate dicts, as 'key: a vs b'."""
    if isinstance(stored, dict) and isinstance(fresh, dict):
        out = []
        for key in dict.fromkeys([*stored, *fresh]):
            if where == "" and key in _NOT_COMPARED:
                continue
            out += number_differences(stored.get(key), fresh.get(key), f"{where}.{key}" if where else key)
        return out
    if isinstance(stored, list) and isinstance(fresh, list):
        if len(stored) != len(fresh):
            return [f"{where}: {len(stored)} entries vs {len(fresh)}"]
        return [d for i, (a, b) in enumerate(zip(stored, fresh)) for d in number_differences(a, b, f"{where}[{i}]")]
    if isinstance(stored, bool) or isinstance(fresh, bool) or where == "verdict":
        return [] if stored == fresh else [f"{where}: {stored!r} vs {fresh!r}"]
    if isinstance(stored, (int, float)) and isinstance(fresh, (int, float)):
        close = abs(stored - fresh) <= max(RELATIVE_TOLERANCE * max(abs(stored), abs(fresh)), ABSOLUTE_FLOOR)
        return [] if close else [f"{where}: {stored!r} vs {fresh!r}"]
    if isinstance(stored, (int, float)) or isinstance(fresh, (int, float)) or (stored is None) != (fresh is None):
        return [f"{where}: {stored!r} vs {fresh!r}"]
    return []  # strings other than the verdict: paths and labels, which --root may change


def recorded_request(cert: dict, root: Path | None, trust_code: bool):
    """The AuditRequest the certificate was made from, with its files resolved against ``root``."""
    from ..audit.pipeline import AuditRequest

    recorded = cert.get("request")
    if recorded is None:
        raise AuditInputError("the certificate records no request (it was written by an older version): cannot --recompute")
    known = {f.name for f in fields(AuditRequest)}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise AuditInputError(f"the certificate's request has fields this version does not know ({', '.join(unknown)}): cannot --recompute")
    values = dict(recorded)
    if (values.get("arch") or values.get("trust_teacher_code")) and not trust_code:
        raise AuditInputError("re-running this audit runs code named in the certificate (an --arch factory or a .pt2 teacher); "
                              "add --trust-code only if you trust those files")
    for key in _PATH_FIELDS:
        if values.get(key) is not None:
            values[key] = _resolve(values[key], root)
    for key in _SPEC_FIELDS:
        if values.get(key) is not None and values[key] not in DATASETS:
            values[key] = str(_resolve(values[key], root))
    return AuditRequest(**values)


def recompute_differences(cert: dict, root: Path | None, trust_code: bool) -> list[str]:
    from ..audit.pipeline import run_audit
    from ..reports.markdown import certificate_dict

    fresh = certificate_dict(run_audit(recorded_request(cert, root, trust_code)), cert["command"])
    return number_differences(cert, fresh)


def verify(
    certificate: Path = typer.Argument(..., help="certificate.json written by audit certify."),
    recompute: bool = typer.Option(False, "--recompute", help="Also re-run the recorded audit and compare every number (1e-9 relative)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Resolve the certificate's relative paths against this folder (default: the current one)."),
    trust_code: bool = typer.Option(False, "--trust-code", help="With --recompute: allow re-running an --arch factory or a .pt2 teacher."),
) -> int:
    """Check that the files a certificate names are unchanged (exit 0), or not (exit 1)."""
    cert = load_certificate(certificate)
    statuses = [(record, input_status(record, root)) for record in cert["inputs"]]
    for record, status in statuses:
        print(f"{status:8} {record['role']:14} {record['path']}")
    bad = sum(status != "ok" for _, status in statuses)
    if bad:
        print(f"{bad} of {len(statuses)} inputs differ from the certificate or are missing")
        return 1
    print(f"all {len(statuses)} inputs match their sha256")
    if not recompute:
        return 0
    differences = recompute_differences(cert, root, trust_code)
    if differences:
        print(f"recomputed audit differs in {len(differences)} numbers:")
        for line in differences[:40]:
            print(f"  {line}")
        return 1
    print(f"recomputed audit: verdict and every number match (relative tolerance {RELATIVE_TOLERANCE:g})")
    return 0


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
