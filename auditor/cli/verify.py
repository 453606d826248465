"""``audit verify certificate.json [--recompute]``: are the certified files still the same files?

Exit 0 when every input named in the certificate still has its recorded sha256 (and, with
``--recompute``, re-running the recorded audit gives every number again to 1e-9 relative);
exit 1 when any input differs, is missing or is not a regular file (nothing else is hashed; see
:func:`auditor.audit.verify.input_status`), or a recomputed number or (with ``--trust-code``) an
``--arch`` model's weights digest differs; exit 2 when the certificate itself is invalid (see
:mod:`auditor.certificate.check`), cannot be re-run, or names an ``--arch`` model whose weights
only running its code can re-identify (:func:`auditor.audit.verify.weights_status`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..audit.verify import input_status, recompute_differences, weights_status
from ..certificate.check import load_certificate
from ..certificate.compare import RELATIVE_TOLERANCE


def verify(
    certificate: Path = typer.Argument(..., help="certificate.json written by audit certify."),
    recompute: bool = typer.Option(
        False, "--recompute", help="Also re-run the recorded audit and compare every number (1e-9 relative)."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Resolve the certificate's relative paths against this folder (default: the current one)."
    ),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Allow running the code a certificate names: rebuild an --arch model to compare its weights digest; "
        "with --recompute, re-run an --arch factory, a pickled encoder or a .pt2 teacher.",
    ),
) -> int:
    """Check that the files a certificate names are unchanged (exit 0), or not (exit 1)."""
    cert = load_certificate(certificate)
    statuses = [(record, input_status(record, root)) for record in cert["inputs"]]
    for record, status in statuses:
        print(f"{status:8} {record['role']:14} {record['path']}")
    bad = sum(status != "ok" for _, status in statuses)
    if bad:
        print(f"{bad} of {len(statuses)} inputs differ from the certificate, are missing or are not regular files")
        return 1
    print(f"all {len(statuses)} inputs match their sha256")
    weights = weights_status(cert, root, trust_code)
    if weights is not None:
        status, what = weights
        print(f"{status:8} {'model weights':14} {what}")
        if status != "ok":
            print("the model's weights differ from the certified ones")
            return 1
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
