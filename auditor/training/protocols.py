"""Protocols (``--protocol``): continue a checkpoint given with ``--init`` until a monitor condition.

Each stops at the first epoch whose training-data monitor says it is done: ``collapse`` (alignment
off, strong KL) once the margin is in the constant regime Ĝ ≤ 0; ``rescue`` (alignment on) once the
certificate is restored (certified at 95 %: LCB > 0 + the rounding bound).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..certificate.numbers import CertificateNumbers
from ..certificate.verdict import decide
from ..errors import AuditInputError


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    alignment: bool  # whether the method it runs must use the witness alignment
    default_method: str
    default_kl_weight: float
    done: Callable[[CertificateNumbers], bool]  # from the training-data monitor, after an epoch


PROTOCOLS: dict[str, Protocol] = {
    "collapse": Protocol(
        "collapse",
        "continue a certified model without alignment and with a strong KL weight "
        "until the margin reaches the constant regime (Ĝ ≤ 0 on the training data)",
        alignment=False,
        default_method="vanilla",
        default_kl_weight=8.0,
        done=lambda numbers: numbers.margin <= 0.0,
    ),
    "rescue": Protocol(
        "rescue",
        "restart from a collapsed model with alignment on until the certificate is "
        "restored (LCB at 95 % ≥ 0 on the training data)",
        alignment=True,
        default_method="aligned",
        default_kl_weight=1.0,
        done=lambda numbers: decide(numbers, 0.95, 0.0).certified,
    ),
}


def get_protocol(name: str | None) -> Protocol | None:
    if name is None:
        return None
    if name not in PROTOCOLS:
        raise AuditInputError(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]
