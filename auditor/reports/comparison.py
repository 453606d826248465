"""``audit compare``'s output: two certificates side by side, what changed, and the gate's outcome,
as plain text that fits 80 columns or as Markdown for a pull-request comment."""

from __future__ import annotations

from ..certificate.compare import Comparison
from .escape import markdown_text, terminal_text
from .rows import fmt

WIDTH = 80


def _number_row(label: str, before, after) -> tuple[str, str, str, str]:
    change = "" if before is None or after is None else f"{after - before:+.4f}"
    return label, fmt(before), fmt(after), change


def _changed(before, after) -> str:
    return "" if before == after else "changed"


def comparison_rows(c: Comparison) -> list[tuple[str, str, str, str]]:
    """(quantity, base, new, change) for the numbers a release is judged by."""
    b, n = c.base, c.new
    same_confidence = b["confidence"] == n["confidence"]
    lcb_label = f"LCB ({b['confidence']:.0%})" if same_confidence else "LCB (at its confidence)"
    db, dn = b["diagnostics"], n["diagnostics"]
    return [
        ("verdict", b["verdict"].replace("_", " "), n["verdict"].replace("_", " "), ""),
        _number_row("margin Ĝ (nats)", b["margin"], n["margin"]),
        _number_row(lcb_label, b["margin_lcb"], n["margin_lcb"]),
        ("confidence", f"{b['confidence']:g}", f"{n['confidence']:g}", _changed(b["confidence"], n["confidence"])),
        _number_row("required margin δ", b["min_margin"], n["min_margin"]),
        _number_row("teacher information I_T", b["teacher_information"], n["teacher_information"]),
        _number_row("alignment loss L", b["alignment_loss"], n["alignment_loss"]),
        (
            "active units",
            f"{db['active_units']} of {db['latent_dim']}",
            f"{dn['active_units']} of {dn['latent_dim']}",
            f"{dn['active_units'] - db['active_units']:+d}",
        ),
        _number_row("view gap Δ_view", (b["view_gap"] or {}).get("bound"), (n["view_gap"] or {}).get("bound")),
        ("samples N", str(b["num_samples"]), str(n["num_samples"]), ""),
        (
            "witness β",
            f"{b['witness']['beta']:g}",
            f"{n['witness']['beta']:g}",
            _changed(b["witness"]["beta"], n["witness"]["beta"]),
        ),
    ]


def _outcome(c: Comparison) -> str:
    return "NEW passes the gate" if c.passes else "NEW fails the gate"


def _fit(text: str, width: int) -> str:
    """``text`` shortened in the middle to ``width`` characters (paths keep both ends)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def comparison_text(c: Comparison, base_name: str, new_name: str) -> str:
    lines = [
        f"vae-audit compare: {_outcome(c)}",
        f"  base  {_fit(terminal_text(base_name), WIDTH - 8)}",
        f"  new   {_fit(terminal_text(new_name), WIDTH - 8)}",
        "",
        f"{'quantity':26}{'base':>16}{'new':>16}{'change':>14}",
    ]
    lines += [
        f"{label:26}{before:>16}{after:>16}{change:>14}".rstrip() for label, before, after, change in comparison_rows(c)
    ]
    lines += ["", "inputs that changed:" if c.changed_inputs else "inputs that changed: none"]
    for changed in c.changed_inputs:
        lines.append(f"  {_fit(terminal_text(changed.role), WIDTH - 3)}:")
        for arrow, entries in (("was", changed.base), ("now", changed.new)):
            for path, sha in entries:
                lines.append(f"    {arrow} {sha[:12]} {_fit(terminal_text(path), WIDTH - 21)}")
    lines += ["", f"{_outcome(c)}:" if c.failures else f"{_outcome(c)}: certified, within the allowed drops"]
    lines += [f"  - {failure}" for failure in c.failures]
    return "\n".join(lines) + "\n"


def comparison_markdown(c: Comparison, base_name: str, new_name: str) -> str:
    lines = [
        f"### vae-audit compare: {_outcome(c)}",
        "",
        f"Base: {markdown_text(base_name)} — new: {markdown_text(new_name)}",
        "",
        "| quantity | base | new | change |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {label} | {before} | {after} | {change} |" for label, before, after, change in comparison_rows(c)]
    lines += ["", "**Inputs that changed:**" + ("" if c.changed_inputs else " none"), ""]
    if c.changed_inputs:
        lines += ["| role | base | new |", "| --- | --- | --- |"]
        for changed in c.changed_inputs:
            cells = [
                "; ".join(f"{sha[:12]} {markdown_text(path)}" for path, sha in entries) or "—"
                for entries in (changed.base, changed.new)
            ]
            lines.append(f"| {markdown_text(changed.role)} | {cells[0]} | {cells[1]} |")
        lines.append("")
    if c.failures:
        lines += [f"**{_outcome(c)}:**", ""] + [f"- {failure}" for failure in c.failures]
    else:
        lines.append(f"**{_outcome(c)}:** certified, within the allowed drops.")
    return "\n".join(lines) + "\n"
