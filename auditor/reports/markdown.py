"""The certificate as data (``certificate.json``) and as text for people (Markdown, terminal).

Every rendering starts from the certificate dict, so a report can be re-rendered from a saved
``certificate.json`` without re-running the audit.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from .. import __version__
from ..sources.hashing import atomic_write_text

SCHEMA = "vae-audit-certificate/1"
NOT_COLLAPSED_NOTE = (
    "\"Not certified\" does not mean \"collapsed\": the certificate is a one-sided test. A healthy "
    "VAE that was not trained against this teacher usually fails it; only a margin above zero "
    "proves that the encoder mean is not constant."
)
CERTIFIED_NOTE = (
    "Certified: the simplex witness on the latent mean predicts the teacher better than any "
    "input-independent predictor can, so the encoder mean is not constant on the audit set "
    "(and, with the confidence bound, on the data distribution)."
)


def _finite_or_none(value):
    """JSON has no NaN/inf: such values are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def certificate_dict(result, command: list[str]) -> dict:
    """The ``certificate.json`` content of an :class:`~auditor.audit.AuditResult`."""
    n, v = result.numbers, result.verdict
    view = None
    if n.view is not None:
        view = dict(n.view, margin_minus_bound=n.margin - n.view["bound"], certified_under_both_views=v.view_certified)
    cert = {
        "schema": SCHEMA,
        "verdict": v.label,
        "meaning": CERTIFIED_NOTE if v.certified else NOT_COLLAPSED_NOTE,
        "margin": n.margin,
        "margin_lcb": v.margin_lcb,
        "margin_std_error": n.margin_std_error,
        "confidence": v.confidence,
        "min_margin": v.min_margin,
        "teacher_information": n.teacher_information,
        "alignment_loss": n.alignment_loss,
        "teacher_marginal_entropy": n.teacher_marginal_entropy,
        "teacher_mean_entropy": n.teacher_mean_entropy,
        "num_samples": n.num_samples,
        "num_classes": n.num_classes,
        "witness": {**result.witness.as_dict(), "source": result.witness_source},
        "view_gap": view,
        "view_gap_reason": result.view_gap_reason,
        "diagnostics": n.diagnostics,
        "per_class": n.per_class,
        "design": n.design,
        **result.context,
        "inputs": [{"role": r.role, "path": r.path, "sha256": r.sha256} for r in result.inputs],
        "tool_version": __version__,
        "command": command,
    }
    return _finite_or_none(cert)


def certificate_json(cert: dict) -> str:
    return json.dumps(cert, indent=2, sort_keys=False) + "\n"


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_rows(cert: dict) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the Markdown report and the terminal summary."""
    d, w = cert["diagnostics"], cert["witness"]
    rows = [
        ("verdict", cert["verdict"].replace("_", " ")),
        ("margin Ĝ = I_T − L (nats)", _fmt(cert["margin"])),
        (f"lower confidence bound ({cert['confidence']:.0%})", _fmt(cert["margin_lcb"])),
        ("required margin δ", _fmt(cert["min_margin"])),
        ("teacher information I_T", _fmt(cert["teacher_information"])),
        ("alignment loss L", _fmt(cert["alignment_loss"])),
        ("samples N", str(cert["num_samples"])),
        ("classes K", str(cert["num_classes"])),
        ("witness β / offset / d", f"{w['beta']:g} / {w['offset']} / {w['latent_dim']}"),
        ("max |μ − mean μ| (exact constancy)", _fmt(d["max_abs_deviation_from_mean"], 6)),
        (f"active units (Var > {d['active_unit_threshold']})", f"{d['active_units']} of {d['latent_dim']}"),
        ("E‖μ‖²", _fmt(d["mean_sq_norm"])),
        ("mean KL to N(0, I)", _fmt(d["mean_prior_kl"])),
        ("witness agreement", _fmt(d["witness_agreement"])),
    ]
    rows += model_diagnostic_rows(d.get("model"))
    view = cert.get("view_gap")
    if view is not None:
        rows += [("view gap bound Δ_view", _fmt(view["bound"])),
                 ("certified under both views", _fmt(view["certified_under_both_views"]))]
    return rows


def model_diagnostic_rows(model: dict | None) -> list[tuple[str, str]]:
    """Rows for ``diagnostics.model`` (see :mod:`auditor.diagnostics_model`); — where not computed."""
    if not model:
        return []
    value = lambda key, field: _fmt(model[key][field]) if model.get(key, {}).get("computed") else "—"
    return [
        ("mutual information I_q(x; z) (nats)", value("mutual_information", "value")),
        ("self-consistency E‖μ(m(z)) − z‖² / E‖x − m(μ(x))‖²",
         f"{value('self_consistency', 'latent')} / {value('self_consistency', 'data')}"),
        ("IMA contrast of the decoder", value("ima_contrast", "mean")),
        ("log p(x|μ(x)) − log p(x|z~prior) (nats)", value("identifiability", "gap")),
    ]


def render_markdown(cert: dict) -> str:
    lines = [f"# VAE audit certificate: **{cert['verdict'].replace('_', ' ')}**", "", cert["meaning"], ""]
    if cert["verdict"] == "certified":
        lines += [f"Note: {NOT_COLLAPSED_NOTE}", ""]  # the other verdict's reading, stated as it is
    lines += ["| quantity | value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in summary_rows(cert)]
    lines += ["", "## View gap", ""]
    view = cert.get("view_gap")
    if view is None:
        lines.append(f"Not computed: {cert.get('view_gap_reason') or 'no second view'}.")
    else:
        lines += ["| quantity | value |", "| --- | --- |",
                  f"| bound Δ_view on \\|G′ − G\\| | {_fmt(view['bound'])} |",
                  f"| margin on the encoder's view G′ | {_fmt(view['margin_encoder_view'])} |",
                  f"| Ĝ − Δ_view | {_fmt(view['margin_minus_bound'])} |",
                  f"| mean KL(p ‖ p′) | {_fmt(view['mean_kl'])} |",
                  f"| mean TV(p, p′) | {_fmt(view['mean_tv'])} |"]
    lines += ["", "## Per teacher class", "",
              "| class | count | teacher mass | mean confidence | witness agreement | mean KL(p‖q) | mean q(class) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in cert["per_class"]:
        lines.append(
            f"| {row['class']} | {row['count']} | {_fmt(row['teacher_mass'])} | {_fmt(row['mean_teacher_confidence'])} | "
            f"{_fmt(row['witness_agreement'])} | {_fmt(row['mean_alignment_loss'])} | {_fmt(row['mean_witness_prob'])} |"
        )
    lines += ["", "## Inputs", "", "| role | path | sha256 |", "| --- | --- | --- |"]
    lines += [f"| {i['role']} | `{i['path']}` | `{i['sha256']}` |" for i in cert["inputs"]]
    lines += ["", f"Tool version {cert['tool_version']}. Command: `{' '.join(cert['command'])}`", ""]
    return "\n".join(lines)


def print_summary(cert: dict, console) -> None:
    from rich.table import Table

    table = Table(title="VAE audit certificate", show_header=False, expand=False)
    table.add_column("quantity", style="bold")
    table.add_column("value", justify="right")
    colour = "green" if cert["verdict"] == "certified" else "yellow"
    for label, value in summary_rows(cert):
        table.add_row(label, f"[{colour}]{value}[/]" if label == "verdict" else value)
    console.print(table)
    console.print(cert["meaning"])


def _render_html(cert: dict) -> str:
    from .html import render_html  # imported on use: matplotlib is slow to import

    return render_html(cert)


def _render_junit(cert: dict) -> str:
    from .junit import render_junit

    return render_junit(cert)


RENDERERS = {
    "md": ("certificate.md", render_markdown),
    "html": ("certificate.html", _render_html),
    "junit": ("certificate.junit.xml", _render_junit),
}


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


def write_reports(cert: dict, out_dir: Path, formats: list[str], with_json: bool = True) -> list[Path]:
    """Render every requested format first, then write each file atomically."""
    rendered = {"certificate.json": certificate_json(cert)} if with_json else {}
    for fmt in formats:
        if fmt != "json":
            name, render = RENDERERS[fmt]
            rendered[name] = render(cert)
    written = []
    for name, text in rendered.items():
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    return written
