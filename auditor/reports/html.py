"""``certificate.html``: one self-contained page a person opens in a browser.

Everything is drawn from the certificate dict (plus, when it exists, the training CSV beside
the checkpoint): the verdict and what it does and does not mean, Ĝ against I_T, the per-class
breakdown, the margin–energy path with this model on it, the view gap, the diagnostics and the
training curve. Plots are matplotlib PNGs embedded as ``data:`` URIs and a Content-Security-
Policy forbids every network request, so the file works offline and leaks nothing when opened.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from ..certificate.document import CERTIFIED_NOTE, NOT_COLLAPSED_NOTE
from ..errors import AuditInputError
from ..sources.regular_files import read_input
from .escape import html_text
from .interface import ReportFormat
from .rows import fmt, prior_kl_text, summary_rows  # one number format for every report

MAX_TRAINING_CSV_BYTES = 64 << 20

TRAINING_COLUMNS = ("margin", "kl", "active_units")
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_GREEN, _AMBER, _GREY, _BLUE = "#1a7f37", "#b35900", "#6e7781", "#0969da"
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #1f2328; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
.verdict { padding: .8em 1em; border-radius: 6px; color: white; font-size: 1.3em; font-weight: 600; }
.certified { background: #1a7f37; } .not_certified { background: #b35900; }
.note { background: #f6f8fa; border-left: 4px solid #d0d7de; padding: .6em 1em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
td, th { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; display: block; margin: .6em 0; }
code { font-size: .88em; overflow-wrap: anywhere; }
code.command .arg { display: inline-block; max-width: 100%; }
"""


# ---------------------------------------------------------------------------- helpers
def _e(value) -> str:
    return html_text(value)  # every string on the page, ours and the certificate's


def _table(header: list[str] | None, rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header) if header else ""
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(fmt(v))}</td>' if isinstance(v, (int, float)) or v is None else f"<td>{_e(v)}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{''.join(body)}</table>"


def _new_figure(width: float = 7.5, height: float = 3.2):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _legend_outside(ax) -> None:
    """The legend right of the axes, never over a bar, a curve or the star."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)


def _img(fig, name: str, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" id="plot-{name}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


# ---------------------------------------------------------------------------- plots
def margin_plot(cert: dict) -> str:
    return _img(margin_figure(cert), "margin", "margin against teacher information")


def margin_figure(cert: dict):
    """Ĝ = I_T − L as bars: the information the teacher offers, what the witness loses, what is left."""
    names = ["teacher information I_T", "alignment loss L", "margin Ĝ", "lower bound (LCB)"]
    values = [cert["teacher_information"], cert["alignment_loss"], cert["margin"], cert["margin_lcb"]]
    colours = [
        _BLUE,
        _GREY,
        _GREEN if cert["margin"] > cert["min_margin"] else _AMBER,
        _GREEN if cert["verdict"] == "certified" else _AMBER,
    ]
    fig = _new_figure(7.5, 2.6)
    ax = fig.add_subplot()
    shown = [0.0 if v is None else v for v in values]
    ax.barh(names[::-1], shown[::-1], color=colours[::-1])
    for y, v in enumerate(values[::-1]):
        # Right of the bar's end, or of zero for a negative bar, so the label never covers the bar.
        ax.annotate(
            "n/a" if v is None else f"{v:.4f}",
            (0 if v is None else max(v, 0.0), y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    ax.axvline(0.0, color="black", lw=0.8)
    ax.axvline(cert["min_margin"], color=_AMBER, lw=1.2, ls="--", label=f"required δ = {cert['min_margin']:g}")
    ax.set_xlabel("nats")
    _legend_outside(ax)
    return fig


def per_class_plot(cert: dict) -> str:
    return _img(per_class_figure(cert), "per-class", "per teacher class: mass and witness agreement")


def per_class_figure(cert: dict):
    rows = cert["per_class"]
    classes = [str(r["class"]) for r in rows]
    fig = _new_figure(7.5, 3.0)
    ax = fig.add_subplot()
    xs = range(len(rows))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [r["teacher_mass"] for r in rows], width, color=_BLUE, label="teacher mass p̄_k")
    ax.bar(
        [x + width / 2 for x in xs],
        [r["witness_agreement"] or 0.0 for r in rows],
        width,
        color=_GREEN,
        label="witness agreement",
    )
    ax.set_xticks(list(xs), classes)
    ax.set_xlabel("teacher class (argmax p)")
    ax.set_ylim(0, 1.05)
    _legend_outside(ax)
    return fig


def energy_path_plot(cert: dict) -> str:
    return _img(energy_path_figure(cert), "energy-path", "margin–energy path with this model")


def view_range(low: float, high: float, value: float) -> tuple[float, float, float]:
    """(low′, high′, where to draw ``value``) on an axis that shows [low, high].

    A value within one span of the range widens it; one further away would squash the range
    into a corner, so it is drawn at the range's nearer edge instead (and said to be off the scale).
    """
    span = (high - low) or 1.0
    if low - span <= value <= high + span:
        return min(low, value), max(high, value), value
    return low, high, min(max(value, low), high)


def energy_path_figure(cert: dict):
    path = cert["design"]["path"]
    energies, margins = [p["energy"] for p in path], [p["margin"] for p in path]
    fig = _new_figure(7.5, 3.4)
    ax = fig.add_subplot()
    ax.plot(energies, margins, "-o", color=_BLUE, ms=3, label="analytic path μ_t = t·μ*(p), t = 0 … 1")
    for p, dx in ((path[0], 4), (path[-1], -24)):
        ax.annotate(
            f"t = {p['t']:g}", (p["energy"], p["margin"]), xytext=(dx, -12), textcoords="offset points", fontsize=8
        )
    ax.axhline(0.0, color="black", lw=0.8)
    ax.axhline(cert["teacher_information"], color=_GREY, lw=0.8, ls=":", label="I_T (the most any witness can reach)")
    x_low, x_high = 0.0, max(energies)
    y_low, y_high = min([*margins, 0.0]), max([*margins, cert["teacher_information"]])
    energy, margin = cert["diagnostics"]["mean_sq_norm"], cert["margin"]
    if energy is not None and margin is not None:
        x_low, x_high, x = view_range(x_low, x_high, energy)
        y_low, y_high, y = view_range(y_low, y_high, margin)
        colour = _GREEN if cert["verdict"] == "certified" else _AMBER
        label = f"this model: E‖μ‖² = {energy:.4g}, Ĝ = {margin:.4f}"
        if (x, y) != (energy, margin):
            label += "\n(off the path's scale: drawn at its edge)"
        ax.plot([x], [y], "*", ms=14, color=colour, label=label, gid="this-model")
    for set_limits, low, high in ((ax.set_xlim, x_low, x_high), (ax.set_ylim, y_low, y_high)):
        pad = 0.06 * ((high - low) or 1.0)  # keeps a star drawn at the edge whole, inside the axes
        set_limits(low - pad, high + pad)
    ax.set_xlabel("energy E‖μ‖²")
    ax.set_ylabel("margin (nats)")
    _legend_outside(ax)
    return fig


def view_gap_plot(cert: dict) -> str:
    return _img(view_gap_figure(cert), "view-gap", "view gap")


def view_gap_figure(cert: dict):
    view, margin = cert["view_gap"], cert["margin"]
    fig = _new_figure(7.5, 2.2)
    ax = fig.add_subplot()
    ax.errorbar(
        [margin],
        [0],
        xerr=[[view["bound"]], [view["bound"]]],
        fmt="o",
        color=_BLUE,
        capsize=6,
        label="Ĝ ± Δ_view (where G′ must lie)",
    )
    ax.plot([view["margin_encoder_view"]], [0], "x", ms=10, color="black", label="G′ on the encoder's view")
    ax.axvline(cert["min_margin"], color=_AMBER, ls="--", lw=1.2, label="required δ")
    ax.set_yticks([])
    ax.set_xlabel("margin (nats)")
    _legend_outside(ax)
    return fig


def latent_variance_plot(cert: dict) -> str:
    return _img(latent_variance_figure(cert), "latent-variance", "latent variance per dimension")


def latent_variance_figure(cert: dict):
    d = cert["diagnostics"]
    variance = d["latent_variance"]
    fig = _new_figure(7.5, 2.6)
    ax = fig.add_subplot()
    ax.bar(range(len(variance)), [max(v, 1e-12) for v in variance], color=_BLUE)
    ax.set_yscale("log")
    ax.axhline(
        d["active_unit_threshold"],
        color=_AMBER,
        ls="--",
        lw=1.2,
        label=f"active-unit threshold {d['active_unit_threshold']:g}",
    )
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("Var μ_d")
    _legend_outside(ax)
    return fig


def training_plot(table) -> str:
    columns = [c for c in TRAINING_COLUMNS if c in table.columns]
    fig = _new_figure(7.5, 1.0 + 1.6 * len(columns))
    axes = fig.subplots(len(columns), 1, sharex=True, squeeze=False)[:, 0]
    for ax, column in zip(axes, columns):
        ax.plot(table["epoch"], table[column], "-", color=_BLUE)
        ax.set_ylabel(column)
        if column == "margin":
            ax.axhline(0.0, color="black", lw=0.8)
    axes[-1].set_xlabel("epoch")
    return _img(fig, "training", "training curve")


# ---------------------------------------------------------------------------- training CSV
def training_csv_path(cert: dict, inputs_base: Path | None = None) -> Path | None:
    """The checkpoint's training log: same stem, ``.csv``, beside the model file (a relative path
    starting from ``inputs_base``, or the current folder)."""
    model = cert.get("model") or {}
    source = model.get("path") or model.get("weights")
    if not isinstance(source, str) or not source:
        return None
    try:
        return (inputs_base or Path()) / Path(source).with_suffix(".csv")
    except ValueError:  # a recorded path with no file name ("/", "..")
        return None


def read_training_csv(path: Path):
    """(table, None) or (None, why it cannot be plotted). The path comes from the certificate, so it
    is read only as a regular file of at most MAX_TRAINING_CSV_BYTES (never a FIFO or /dev/zero)."""
    import pandas as pd

    try:
        table = pd.read_csv(io.BytesIO(read_input(path, MAX_TRAINING_CSV_BYTES, "a training log")))
    except AuditInputError as exc:
        return None, str(exc)
    except (OSError, ValueError) as exc:
        return None, f"{path} cannot be read as CSV ({str(exc).splitlines()[0]})"
    if "epoch" not in table.columns or not any(c in table.columns for c in TRAINING_COLUMNS):
        return None, f"{path} has no 'epoch' column with any of {', '.join(TRAINING_COLUMNS)}"
    columns = ["epoch", *(c for c in TRAINING_COLUMNS if c in table.columns)]
    return table[columns].apply(pd.to_numeric, errors="coerce"), None  # text in a cell plots as a gap


# ---------------------------------------------------------------------------- sections
def _verdict_section(cert: dict) -> str:
    verdict = cert["verdict"]
    certified = verdict == "certified"
    label = "Certified: the encoder mean is not constant" if certified else "Not certified"
    means = CERTIFIED_NOTE if certified else NOT_COLLAPSED_NOTE
    not_mean = (
        "It does not say that the latent code is good, disentangled or useful beyond the teacher's "
        "categories: only that the encoder mean carries at least Ĝ nats of teacher information, so it is not "
        "constant."
        if certified
        else "It does not say that the model collapsed. It says the simplex witness on this latent mean did not "
        "beat the best constant predictor of the teacher by the required margin. Exact constancy is shown in "
        "the diagnostics below."
    )
    return (
        f'<div class="verdict {verdict}" id="verdict">{_e(label)}</div>'
        f'<h2>What this means</h2><p class="note">{_e(means)}</p>'
        f'<h2>What this does not mean</h2><p class="note">{_e(not_mean)}</p>'
    )


def _per_class_section(cert: dict) -> str:
    rows = [
        [
            r["class"],
            r["count"],
            r["teacher_mass"],
            r["mean_teacher_confidence"],
            r["witness_agreement"],
            r["mean_alignment_loss"],
            r["mean_witness_prob"],
        ]
        for r in cert["per_class"]
    ]
    header = ["class", "count", "teacher mass", "mean confidence", "witness agreement", "mean KL(p‖q)", "mean q(class)"]
    return "<h2>Per teacher class</h2>" + per_class_plot(cert) + _table(header, rows)


def _energy_path_section(cert: dict) -> str:
    design = cert.get("design")
    out = ["<h2>Margin–energy path</h2>"]
    if design is None:
        return out[0] + "<p>This certificate records no margin–energy path (it was written by an older version).</p>"
    out.append(
        "<p>The analytic code μ*(p) reproduces the teacher exactly (margin I_T) at energy "
        f"((K−1)/(Kβ²))·E_T = {fmt(design['analytic_code_energy'])} with E_T = {fmt(design['E_T'])}. Scaling it by "
        "t runs from the uniform predictor (t = 0, margin H(p̄) − log K ≤ 0) to the teacher itself (t = 1): how much "
        "energy E‖μ‖² a code needs for a given margin on this audit set. The star is this model.</p>"
    )
    out.append(energy_path_plot(cert))
    out.append(_table(["t", "energy", "margin"], [[p["t"], p["energy"], p["margin"]] for p in design["path"]]))
    return "".join(out)


def _view_gap_section(cert: dict) -> str:
    view = cert.get("view_gap")
    if view is None:
        return f"<h2>View gap</h2><p>Not computed: {_e(cert.get('view_gap_reason') or 'no second view')}.</p>"
    rows = [
        ["bound Δ_view on |G′ − G|", view["bound"]],
        ["margin on the encoder's view G′", view["margin_encoder_view"]],
        ["Ĝ − Δ_view", view["margin_minus_bound"]],
        ["mean KL(p ‖ p′)", view["mean_kl"]],
        ["mean TV(p, p′)", view["mean_tv"]],
        ["certified under both views", "yes" if view["certified_under_both_views"] else "no"],
    ]
    return "<h2>View gap</h2>" + view_gap_plot(cert) + _table(None, rows)


def _diagnostics_section(cert: dict) -> str:
    d = cert["diagnostics"]
    rows = [
        ["exactly constant on the audit set", "yes" if d["exactly_constant"] else "no"],
        ["max |μ − mean μ|", d["max_abs_deviation_from_mean"]],
        [f"active units (Var > {d['active_unit_threshold']:g})", f"{d['active_units']} of {d['latent_dim']}"],
        ["E‖μ‖²", d["mean_sq_norm"]],
        ["mean KL to N(0, I)", prior_kl_text(d)],
        ["witness agreement", d["witness_agreement"]],
        ["mean escape force ‖βS(q − p)‖", d.get("escape_force")],
    ]
    plot = latent_variance_plot(cert) if d.get("latent_variance") else ""
    return (
        "<h2>Diagnostics</h2><p>Reported beside the certificate, never folded into it.</p>" + _table(None, rows) + plot
    )


def _training_section(cert: dict, inputs_base: Path | None) -> str:
    """The training curve from the CSV beside the model; no section at all when there is none."""
    path = training_csv_path(cert, inputs_base)
    if path is None or not path.is_file():
        return ""
    table, problem = read_training_csv(path)
    if table is None:
        return f"<h2>Training curve</h2><p>{_e(problem)}.</p>"
    return f"<h2>Training curve</h2><p>From <code>{_e(path)}</code>.</p>" + training_plot(table)


def option_groups(command: list[str]) -> list[list[str]]:
    """The command's words, a new group at each option (``--beta 2`` stays together)."""
    groups: list[list[str]] = []
    for word in command:
        if not groups or (word.startswith("-") and not _is_number(word)):
            groups.append([])
        groups[-1].append(word)
    return groups


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _provenance_section(cert: dict) -> str:
    rows = [[i["role"], i["path"], i["sha256"]] for i in cert["inputs"]]
    # One box per option and its value: lines break between them, inside one only when it is longer than a line.
    command = " ".join(f'<span class="arg">{_e(" ".join(group))}</span>' for group in option_groups(cert["command"]))
    return (
        "<h2>Inputs</h2>"
        + _table(["role", "path", "sha256"], rows)
        + f'<p>Tool version {_e(cert["tool_version"])}. Command: <code class="command">{command}</code></p>'
    )


def render_html(cert: dict, inputs_base: Path | None = None) -> str:
    """The whole page as a string (a checked certificate dict in, no files read but the training CSV,
    found from ``inputs_base``: where the certificate's relative paths start, default the current folder)."""
    verdict = cert["verdict"].replace("_", " ")
    summary = _table(None, [[label, value] for label, value in summary_rows(cert)])
    sections = [
        _verdict_section(cert),
        "<h2>Margin against teacher information</h2>"
        "<p>The best input-independent predictor of the teacher loses exactly I_T; the witness loses L. "
        "Their difference Ĝ is the certificate: above zero, the latent mean cannot be constant.</p>"
        + margin_plot(cert)
        + summary,
        _per_class_section(cert),
        _energy_path_section(cert),
        _view_gap_section(cert),
        _diagnostics_section(cert),
        _training_section(cert, inputs_base),
        _provenance_section(cert),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>VAE audit: {_e(verdict)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>VAE audit certificate</h1>{''.join(sections)}</body></html>\n"
    )


class HtmlReport(ReportFormat):
    name, filename = "html", "certificate.html"

    def render(self, cert: dict) -> str:
        return render_html(cert)

    def render_with_inputs(self, cert: dict, inputs_base: Path | None) -> str:
        return render_html(cert, inputs_base)
