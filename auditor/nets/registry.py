"""The architectures a checkpoint may name, in one explicit table, and building a model from its JSON.

A new architecture is one module with a builder ``(arch_json, where) -> nn.Module`` and one line here.
Every model is first built on the ``meta`` device, which gives every parameter its shape and no
memory: a JSON asking for more than :data:`MAX_PARAMETERS` parameters (a hidden width of 10⁸
is 25 GB of float32) is refused before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import AuditInputError, shown
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


MAX_PARAMETERS = 2**28  # 1 GiB of float32


def build_model(arch: dict, where: str = "architecture") -> nn.Module:
    """The model ``arch`` describes, once its JSON and its parameter count have been checked."""
    model_skeleton(arch, where)
    return _builder(arch, where)(arch, where)


def model_skeleton(arch: dict, where: str = "architecture") -> nn.Module:
    """The model on the meta device (shapes, no memory); refused beyond :data:`MAX_PARAMETERS`."""
    builder = _builder(arch, where)
    try:
        with torch.device("meta"):
            skeleton = builder(arch, where)
    except RuntimeError:  # a tensor too large for even its byte count to be computed
        raise AuditInputError(f"{where}: the architecture's tensors are too large to exist") from None
    count = sum(tensor.numel() for tensor in skeleton.state_dict().values())
    if count > MAX_PARAMETERS:
        raise AuditInputError(
            f"{where}: the architecture has {count} parameters, more than the limit of {MAX_PARAMETERS}"
        )
    return skeleton


def _builder(arch: dict, where: str) -> Callable[[dict, str], nn.Module]:
    if not isinstance(arch, dict):
        raise AuditInputError(f"{where}: architecture must be a JSON object")
    name = arch.get("name")
    if not isinstance(name, str) or name not in ARCHITECTURES:  # a list would not even hash
        raise AuditInputError(
            f"{where}: unknown architecture {shown(name)} (known: {', '.join(sorted(ARCHITECTURES))})"
        )
    return ARCHITECTURES[name]
