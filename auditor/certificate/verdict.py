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
    view_certified: bool | None  # G − Δ_view > δ + rounding bound: holds under both views; None without a view gap

    @property
    def label(self) -> str:
        return "certified" if self.certified else "not_certified"


def certifies(lower_bound: float | None, min_margin: float, rounding_bound: float, exactly_constant: bool) -> bool:
    """The verdict rule (docs/mathematics.md): a lower bound on the margin certifies iff it exceeds
    δ by more than the margin's rounding bound — strictly: a tie, or a margin that rounding alone
    could have produced, proves nothing — and the encoder mean is not exactly constant.

    The one rule for the certificate's verdict, the view-gap check and the certificate checker.
    """
    return lower_bound is not None and not exactly_constant and lower_bound > min_margin + rounding_bound


def decide(numbers: CertificateNumbers, confidence: float = 0.95, min_margin: float = 0.0) -> Verdict:
    """Certified iff LCB > δ + rounding bound and μ is not exactly constant. The view-gap check is
    reported beside it, not folded in."""
    if not math.isfinite(min_margin):
        raise AuditInputError(f"--min-margin must be a finite number, got {min_margin}")
    lcb = numbers.margin_lcb(confidence)
    constant = bool(numbers.diagnostics["exactly_constant"])
    certified = certifies(lcb, min_margin, numbers.margin_rounding_bound, constant)
    view_ok = None
    if numbers.view is not None:
        view_lower = numbers.margin - numbers.view["bound"]
        view_ok = certifies(view_lower, min_margin, numbers.margin_rounding_bound, constant)
    return Verdict(certified, lcb, confidence, min_margin, view_ok)
