"""The verdict: certified or not, from the numbers, the confidence and the required margin δ."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import AuditInputError
from .numbers import CertificateNumbers


@dataclass(frozen=True)
class Verdict:
    certified: bool
    margin_lcb: float | None
    confidence: float
    min_margin: float
    view_certified: bool | None  # G − Δ_view > δ: holds under both views; None without a view gap

    @property
    def label(self) -> str:
        return "certified" if self.certified else "not_certified"


def decide(numbers: CertificateNumbers, confidence: float = 0.95, min_margin: float = 0.0) -> Verdict:
    """Certified iff LCB ≥ δ (docs/mathematics.md). The view-gap check is reported beside it, not folded in."""
    if not math.isfinite(min_margin):
        raise AuditInputError(f"--min-margin must be a finite number, got {min_margin}")
    lcb = numbers.margin_lcb(confidence)
    certified = lcb is not None and lcb >= min_margin
    view_ok = None
    if numbers.view is not None:
        view_ok = numbers.margin - numbers.view["bound"] > min_margin
    return Verdict(certified, lcb, confidence, min_margin, view_ok)
