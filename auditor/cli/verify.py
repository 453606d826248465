"""``audit verify certificate.json [--recompute]``: are the certified files still the same files?

Exit 0 when every input named in the certificate still has its recorded sha256 (and, with
``--recompute``, re-running the recorded audit gives every number again to 1e-9 relative);
exit 1 when any input differs, is missing or is not a regular file (nothing else is hashed; see
:func:`auditor.audit.verify.input_status`), or a recomputed number or (with ``--trust-code``) an
``--arch`` model's weights digest differs; exit 2 when the certificate itself is invalid (see
:mod:`auditor.certificate.check`), cannot be re-run, or names an ``--arch`` model whose weights
only running its code can re-identify (:func:`auditor.audit.verify.weights_status`).
The file may also be the certificate's in-toto Statement (``certificate.intoto.json``): its
subjects are then checked too (:mod:`auditor.certificate.attestation`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from ..audit.verify import input_status, recompute_differences, subject_statuses, weights_status
from ..certificate.attestation import load_attested
from ..certificate.compare import RELATIVE_TOLERANCE
from ..certificate.paths import input_base_and_origin
from ..reports.escape import terminal_text


def _counted(statuses: list[str], inputs: int, subjects: int) -> str:
    what = f"{inputs} input{'s' * (inputs != 1)}" + (
        f" and {subjects} subject{'s' * (subjects != 1)}" if subjects else ""
    )
    counts = Counter(statuses)
    if set(counts) == {"ok"}:
        return f"all {what} match their sha256"
    return f"of {what}: " + ", ".join(f"{n} {status}" for status, n in counts.items())


def verify(
    certificate: Path = typer.Argument(
        ..., help="certificate.json written by audit certify, or its in-toto Statement (certificate.intoto.json)."
    ),
    recompute: bool = typer.Option(
        False, "--recompute", help="Also re-run the recorded audit and compare every number (1e-9 relative)."
    ),
    root: Path | None = typer.Option(
        None,
        "--root",
        help="Resolve the certificate's relative paths against this folder "
        "(default: the folder its paths_relative_to names, else the current one).",
    ),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Allow running the code a certificate names: rebuild an --arch model to compare its weights digest; "
        "with --recompute, re-run an --arch factory, a pickled encoder or a .pt2 teacher.",
    ),
) -> int:
    """Check that the files a certificate names are unchanged (exit 0), or not (exit 1)."""
    cert, subjects = load_attested(certificate)
    base, origin = input_base_and_origin(cert, certificate, root)
    print(f"relative paths start from {terminal_text(str(base))} ({origin})")
    statuses = [input_status(record, base) for record in cert["inputs"]]
    rows = [(status, record["role"], record["path"]) for record, status in zip(cert["inputs"], statuses)]
    if subjects is not None:
        for subject, status in zip(subjects, subject_statuses(subjects, cert, statuses)):
            rows.append((status, "subject", subject.name))
    for status, role, path in rows:
        print(f"{status:8} {terminal_text(role):14} {terminal_text(path)}")
    summary = _counted([status for status, _, _ in rows], len(statuses), len(subjects or []))
    if any(status != "ok" for status, _, _ in rows):
        print(f"{summary}: the files differ from the certificate or are not where it says")
        return 1
    print(summary)
    weights = weights_status(cert, base, trust_code)
    if weights is not None:
        status, what = weights
        print(f"{status:8} {'model weights':14} {terminal_text(what)}")
        if status != "ok":
            print("the model's weights differ from the certified ones")
            return 1
    if not recompute:
        return 0
    differences = recompute_differences(cert, base, trust_code)
    if differences:
        print(f"recomputed audit differs in {len(differences)} numbers:")
        for line in differences[:40]:
            print(f"  {terminal_text(line)}")
        return 1
    print(f"recomputed audit: verdict and every number match (relative tolerance {RELATIVE_TOLERANCE:g})")
    return 0


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
