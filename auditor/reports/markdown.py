"""``certificate.md``: the certificate as Markdown (the summary table, view gap, per-class table and
inputs), also appended to GitHub's job summary by ``audit certify``.

Every string that is not a number goes through :mod:`auditor.reports.escape` — table labels too,
since two of them hold a ``|`` — so that GitHub's renderer shows exactly the certificate's
values: no row gains or loses a cell, and no path or command can start a heading or a line.
"""

from __future__ import annotations

from ..certificate.document import NOT_COLLAPSED_NOTE
from .escape import markdown_code, markdown_text
from .interface import ReportFormat
from .rows import fmt, summary_rows


def render_markdown(cert: dict) -> str:
    verdict = markdown_text(cert["verdict"].replace("_", " "))
    lines = [f"# VAE audit certificate: **{verdict}**", "", markdown_text(cert["meaning"]), ""]
    if cert["verdict"] == "certified":
        lines += [f"Note: {markdown_text(NOT_COLLAPSED_NOTE)}", ""]  # the other verdict's reading, stated as it is
    lines += ["| quantity | value |", "| --- | --- |"]
    lines += [f"| {markdown_text(label)} | {markdown_text(value)} |" for label, value in summary_rows(cert)]
    lines += ["", "## View gap", ""]
    view = cert.get("view_gap")
    if view is None:
        lines.append(f"Not computed: {markdown_text(cert.get('view_gap_reason') or 'no second view')}.")
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
    lines += [
        f"| {markdown_text(i['role'])} | {markdown_code(i['path'], in_table=True)} | {markdown_code(i['sha256'], in_table=True)} |"
        for i in cert["inputs"]
    ]
    command = markdown_code(" ".join(cert["command"]))
    lines += ["", f"Tool version {markdown_text(cert['tool_version'])}. Command: {command}", ""]
    return "\n".join(lines)


class MarkdownReport(ReportFormat):
    name, filename = "md", "certificate.md"

    def render(self, cert: dict) -> str:
        return render_markdown(cert)
