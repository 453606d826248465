"""The numbers every report shows, as (label, value) rows, and the one number format they share."""

from __future__ import annotations

import unicodedata


def fmt(value, digits: int = 4) -> str:
    """A number as reports print it; "—" for a missing one (None or NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def one_line(text: str) -> str:
    """Text from a certificate as one printable line: control characters (newlines, escapes) become spaces."""
    return "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)


def summary_rows(cert: dict) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the Markdown report and the terminal summary."""
    d, w = cert["diagnostics"], cert["witness"]
    rows = [
        ("verdict", cert["verdict"].replace("_", " ")),
        ("margin Ĝ = I_T − L (nats)", fmt(cert["margin"])),
        (f"lower confidence bound ({cert['confidence']:.0%})", fmt(cert["margin_lcb"])),
        ("required margin δ", fmt(cert["min_margin"])),
        ("teacher information I_T", fmt(cert["teacher_information"])),
        ("alignment loss L", fmt(cert["alignment_loss"])),
        ("samples N", str(cert["num_samples"])),
        ("classes K", str(cert["num_classes"])),
        ("witness β / offset / d", f"{w['beta']:g} / {w['offset']} / {w['latent_dim']}"),
        ("max |μ − mean μ| (exact constancy)", fmt(d["max_abs_deviation_from_mean"], 6)),
        (f"active units (Var > {d['active_unit_threshold']})", f"{d['active_units']} of {d['latent_dim']}"),
        ("E‖μ‖²", fmt(d["mean_sq_norm"])),
        ("mean KL to N(0, I)", prior_kl_text(d)),
        ("witness agreement", fmt(d["witness_agreement"])),
    ]
    rows += model_diagnostic_rows(d.get("model"))
    view = cert.get("view_gap")
    if view is not None:
        rows += [
            ("view gap bound Δ_view", fmt(view["bound"])),
            ("certified under both views", fmt(view["certified_under_both_views"])),
        ]
    return rows


def not_computed(reason: str | None) -> str:
    """What a report shows for a diagnostic that was not computed: the reason, never a bare dash."""
    return f"not computed: {reason}" if reason else "not computed"


def prior_kl_text(diagnostics: dict) -> str:
    """The mean KL to the prior, or why there is none (it needs log-variances)."""
    value = diagnostics.get("mean_prior_kl")
    return fmt(value) if value is not None else not_computed("no log-variances (the encoder gives μ only)")


def model_diagnostic_rows(model: dict | None) -> list[tuple[str, str]]:
    """Rows for ``diagnostics.model`` (see :mod:`auditor.audit.diagnostics`), with the reason where not computed."""
    if not model:
        return []
    # None of them ran (--no-model-diagnostics, or a rank that writes nothing): one reason for all.
    everything = model if model.get("computed") is False else None

    def value(key: str, *fields: str) -> str:
        entry = everything or model.get(key) or {}
        if not entry.get("computed"):
            return not_computed(entry.get("reason"))
        return " / ".join(fmt(entry.get(field)) for field in fields)

    return [
        ("mutual information I_q(x; z) (nats)", value("mutual_information", "value")),
        ("self-consistency E‖μ(m(z)) − z‖² / E‖x − m(μ(x))‖²", value("self_consistency", "latent", "data")),
        ("IMA contrast of the decoder", value("ima_contrast", "mean")),
        ("log p(x|μ(x)) − log p(x|z~prior) (nats)", value("identifiability", "gap")),
    ]
