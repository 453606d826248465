"""Writing the reports of one run: the registry of formats, the files, and GitHub's job summary.

Every file of a run is rendered before any is written, and the set is then written together
(:func:`~auditor.sources.atomic.replace_files_together`): a failure leaves the folder's old set as
it was, and ``certificate.json`` is renamed into place last.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..certificate.document import certificate_json
from ..errors import AuditInputError
from ..sources.atomic import replace_files_together
from .escape import terminal_text
from .html import HtmlReport
from .interface import ReportFormat
from .intoto import IntotoReport
from .junit import JunitReport
from .markdown import MarkdownReport

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


def step_summary_wanted() -> bool:
    """Inside a GitHub Actions job ($GITHUB_STEP_SUMMARY set), the Markdown report joins the job summary."""
    return bool(os.environ.get("GITHUB_STEP_SUMMARY"))


def append_github_step_summary(markdown: str) -> None:
    """Append an already rendered Markdown report to $GITHUB_STEP_SUMMARY (a warning if it cannot be)."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    try:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    except OSError as exc:  # the certificate is written; a summary page is a nicety, not a reason to fail
        print(terminal_text(f"warning: cannot append to GITHUB_STEP_SUMMARY {target}: {exc}"), file=sys.stderr)


def render_reports(
    cert: dict, formats: list[str], with_json: bool = True, inputs_base: Path | None = None
) -> dict[str, str]:
    """File name → text of every requested report, ``certificate.json`` last (it stands for the
    set). ``inputs_base``: where the certificate's relative paths start (None: the current folder)."""
    rendered = {}
    for fmt in formats:
        if fmt != "json":
            report = RENDERERS[fmt]
            rendered[report.filename] = report.render_with_inputs(cert, inputs_base)
    if with_json:
        rendered["certificate.json"] = certificate_json(cert)
    return rendered


def write_reports(
    cert: dict, out_dir: Path, formats: list[str], with_json: bool = True, inputs_base: Path | None = None
) -> list[Path]:
    """Render every requested format first, then replace the folder's reports all together.

    With ``with_json`` (``audit certify``) the files are a new set: reports of a format not
    requested this time are removed, so that no older report sits beside a certificate it does
    not show. Without it (``audit report``) only the requested files are replaced.
    """
    return write_rendered(render_reports(cert, formats, with_json, inputs_base), out_dir, replaces_set=with_json)


def write_rendered(rendered: dict[str, str], out_dir: Path, replaces_set: bool) -> list[Path]:
    """Write :func:`render_reports`' files together (see :func:`write_reports`)."""
    stale = [report.filename for report in RENDERERS.values()] if replaces_set else []
    files = {name: text.encode("utf-8") for name, text in rendered.items()}
    return replace_files_together(out_dir, files, remove=stale)
