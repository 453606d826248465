"""The architectures a checkpoint may name, in one explicit table, and building a model from its JSON.

A new architecture is one module with a builder ``(arch_json, where) -> nn.Module`` and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import AuditInputError
from .constvar import build_constvar
from .conv import build_conv
from .lidvae import build_lidvae
from .mlp import build_mlp

# name → builder(arch_json, where)
ARCHITECTURES: dict[str, Callable[[dict, str], nn.Module]] = {
    "mlp": build_mlp,
    "conv": build_conv,
    "lidvae": build_lidvae,
    "const-var": build_constvar,
}


def build_model(arch: dict, where: str = "architecture") -> nn.Module:
    if not isinstance(arch, dict):
        raise AuditInputError(f"{where}: architecture must be a JSON object")
    name = arch.get("name")
    if name not in ARCHITECTURES:
        raise AuditInputError(f"{where}: unknown architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[name](arch, where)
