"""``audit compare BASE.json NEW.json``: a release against the last one, as a CI gate.

Exit 0 when NEW is certified and its margin and lower confidence bound fell by no more than
``--max-margin-drop`` / ``--max-lcb-drop`` (not checked when not given); 1 when it is not; 2 when
either file is invalid or the two are not comparable (another teacher, other audit data or rows,
another witness K; with ``--max-lcb-drop``, another confidence), saying which. Either file may be
a certificate or its in-toto Statement.
"""

from __future__ import annotations

import math
import sys
from enum import StrEnum
from pathlib import Path

import typer

from ..certificate.attestation import load_attested
from ..certificate.compare import compare_certificates
from ..errors import AuditInputError
from ..reports.comparison import comparison_markdown, comparison_text


class CompareFormat(StrEnum):
    text = "text"
    md = "md"


def _allowed_drop(value: float | None, flag: str) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise AuditInputError(f"{flag} must be a finite number of nats >= 0, got {value!r}")
    return value


def compare(
    base: Path = typer.Argument(..., help="The last release's certificate.json (or certificate.intoto.json)."),
    new: Path = typer.Argument(..., help="This release's certificate.json (or certificate.intoto.json)."),
    max_margin_drop: float | None = typer.Option(
        None, "--max-margin-drop", help="Fail when the margin Ĝ fell by more than this many nats."
    ),
    max_lcb_drop: float | None = typer.Option(
        None, "--max-lcb-drop", help="Fail when the lower confidence bound fell by more than this many nats."
    ),
    output_format: CompareFormat = typer.Option(
        CompareFormat.text, "--format", help="text (80 columns) or md (a table for a pull-request comment)."
    ),
) -> int:
    """Compare two certificates side by side; exit 0 when NEW is certified and within the allowed drops."""
    comparison = compare_certificates(
        load_attested(base)[0],
        load_attested(new)[0],
        _allowed_drop(max_margin_drop, "--max-margin-drop"),
        _allowed_drop(max_lcb_drop, "--max-lcb-drop"),
    )
    render = comparison_markdown if output_format is CompareFormat.md else comparison_text
    sys.stdout.write(render(comparison, str(base), str(new)))
    return 0 if comparison.passes else 1


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
