"""``audit report certificate.json --format html,md,junit,intoto``: re-render reports without re-auditing.

The certificate is checked first (:mod:`auditor.certificate.check`): an unknown schema or
inconsistent numbers exit with code 2 and nothing is written. Exit 0 once the reports are written,
whatever the verdict (the verdict's exit code belongs to ``audit certify``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..certificate.attestation import load_attested
from ..certificate.paths import input_base, rebased
from ..errors import AuditInputError
from ..reports.escape import terminal_text
from ..reports.writer import RENDERERS, write_reports
from ..sources.atomic import require_writable_folder


def report(
    certificate: Path = typer.Argument(
        ..., help="certificate.json written by audit certify, or its in-toto Statement (certificate.intoto.json)."
    ),
    formats: str = typer.Option("html", "--format", help=f"Comma-separated: {', '.join(RENDERERS)}."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the reports (default: the certificate's folder)."),
) -> int:
    """Render reports (HTML, Markdown, JUnit XML, in-toto Statement) from a saved certificate.json."""
    fmt_list = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = [f for f in fmt_list if f not in RENDERERS]
    if unknown or not fmt_list:
        raise AuditInputError(f"--format must list some of {', '.join(RENDERERS)} (got {formats!r})")
    out_dir = out if out is not None else certificate.parent
    cert, _ = load_attested(certificate)
    base = input_base(cert, certificate)
    require_writable_folder(out_dir, "--out")
    if out is not None:  # the files written there reach the same inputs
        cert = rebased(cert, certificate, out_dir)
    for path in write_reports(cert, out_dir, fmt_list, with_json=False, inputs_base=base):
        print(terminal_text(f"wrote {path}"))
    return 0


def register(app: typer.Typer) -> None:
    app.command("report")(report)
