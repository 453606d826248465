"""``certificate.json``: the certificate as a document — its schema name, the verdict's meaning,
and the dict built from an audit's result.

Renderers (Markdown, HTML, JUnit, terminal) and the checker read this document; none of them
owns it. Every rendering starts from the dict, so a report can be re-rendered from a saved
``certificate.json`` without re-running the audit.
"""

from __future__ import annotations

import json
import math

from .._version import __version__
from . import paths

SCHEMA = "vae-audit-certificate/1"
NOT_COLLAPSED_NOTE = (
    '"Not certified" does not mean "collapsed": the certificate is a one-sided test. A healthy '
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


def certificate_dict(result, command: list[str], paths_relative_to: str | None = None) -> dict:
    """The ``certificate.json`` content of an :class:`~auditor.audit.pipeline.AuditResult`;
    ``paths_relative_to`` as :mod:`auditor.certificate.paths` computes it for the report folder."""
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
        "margin_rounding_bound": n.margin_rounding_bound,
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
        **({paths.KEY: paths_relative_to} if paths_relative_to is not None else {}),
        "tool_version": __version__,
        "command": command,
    }
    return _finite_or_none(cert)


def certificate_json(cert: dict) -> str:
    return json.dumps(cert, indent=2, sort_keys=False) + "\n"
