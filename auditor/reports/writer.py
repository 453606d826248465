"""Writing the reports of one run: the registry of formats, the files, and GitHub's job summary."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..certificate.document import certificate_json
from ..errors import AuditInputError
from ..sources.atomic import atomic_write_text
from .html import HtmlReport
from .interface import ReportFormat
from .intoto import IntotoReport
from .junit import JunitReport
from .markdown import MarkdownReport, render_markdown

# Every format besides json (always written by audit certify), by its --format name.
RENDERERS: dict[str, ReportFormat] = {
    report.name: report for report in (MarkdownReport(), HtmlReport(), JunitReport(), IntotoReport())
}


def parse_formats(value: str) -> list[str]:
    formats = [f.strip().lower() for f in value.split(",") if f.strip()]
    known = ["json", *RENDERERS]
    unknown = [f for f in formats if f not in known]
    if unknown:
        raise AuditInputError(f"unknown --format {', '.join(unknown)} (known: {', '.join(known)})")
    return formats


def append_github_step_summary(cert: dict) -> None:
    """Inside a GitHub Actions job ($GITHUB_STEP_SUMMARY set), add the Markdown report to the job summary."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    try:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(render_markdown(cert) + "\n")
    except OSError as exc:  # the certificate is written; a summary page is a nicety, not a reason to fail
        print(f"warning: cannot append to GITHUB_STEP_SUMMARY {target}: {exc}", file=sys.stderr)


def write_reports(
    cert: dict, out_dir: Path, formats: list[str], with_json: bool = True, inputs_base: Path | None = None
) -> list[Path]:
    """Render every requested format first, then write each file atomically. ``inputs_base``: where
    the certificate's relative paths start (None: the current folder)."""
    rendered = {"certificate.json": certificate_json(cert)} if with_json else {}
    for fmt in formats:
        if fmt != "json":
            report = RENDERERS[fmt]
            rendered[report.filename] = report.render_with_inputs(cert, inputs_base)
    written = []
    for name, text in rendered.items():
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    return written
