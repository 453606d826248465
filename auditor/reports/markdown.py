"""``certificate.md``: the certificate as Markdown (the summary table, view gap, per-class table and
inputs), also appended to GitHub's job summary by ``audit certify``."""

from __future__ import annotations

import re

from ..certificate.document import NOT_COLLAPSED_NOTE
from .interface import ReportFormat
from .rows import fmt, one_line, summary_rows

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~])")


def markdown_cell(text: str) -> str:
    """Text from a certificate, inert in a Markdown table cell: one line, every special character escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", one_line(text))


def render_markdown(cert: dict) -> str:
    lines = [f"# VAE audit certificate: **{cert['verdict'].replace('_', ' ')}**", "", cert["meaning"], ""]
    if cert["verdict"] == "certified":
        lines += [f"Note: {NOT_COLLAPSED_NOTE}", ""]  # the other verdict's reading, stated as it is
    lines += ["| quantity | value |", "| --- | --- |"]
    lines += [f"| {label} | {markdown_cell(value)} |" for label, value in summary_rows(cert)]
    lines += ["", "## View gap", ""]
    view = cert.get("view_gap")
    if view is None:
        lines.append(f"Not computed: {cert.get('view_gap_reason') or 'no second view'}.")
    else:
        lines += [
            "| quantity | value |",
            "| --- | --- |",
            f"| bound Δ_view on \\|G′ − G\\| | {fmt(view['bound'])} |",
            f"| margin on the encoder's view G′ | {fmt(view['margin_encoder_view'])} |",
            f"| Ĝ − Δ_view | {fmt(view['margin_minus_bound'])} |",
            f"| mean KL(p ‖ p′) | {fmt(view['mean_kl'])} |",
            f"| mean TV(p, p′) | {fmt(view['mean_tv'])} |",
        ]
    lines += [
        "",
        "## Per teacher class",
        "",
        "| class | count | teacher mass | mean confidence | witness agreement | mean KL(p‖q) | mean q(class) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in cert["per_class"]:
        lines.append(
            f"| {row['class']} | {row['count']} | {fmt(row['teacher_mass'])} | {fmt(row['mean_teacher_confidence'])} | "
            f"{fmt(row['witness_agreement'])} | {fmt(row['mean_alignment_loss'])} | {fmt(row['mean_witness_prob'])} |"
        )
    lines += ["", "## Inputs", "", "| role | path | sha256 |", "| --- | --- | --- |"]
    lines += [f"| {i['role']} | `{i['path']}` | `{i['sha256']}` |" for i in cert["inputs"]]
    lines += ["", f"Tool version {cert['tool_version']}. Command: `{' '.join(cert['command'])}`", ""]
    return "\n".join(lines)


class MarkdownReport(ReportFormat):
    name, filename = "md", "certificate.md"

    def render(self, cert: dict) -> str:
        return render_markdown(cert)
