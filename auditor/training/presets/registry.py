"""Every preset by its ``--preset`` name, in one explicit table."""

from __future__ import annotations

from ...errors import AuditInputError
from .base import Preset
from .cifar100 import CIFAR100
from .mnist import MNIST
from .tinyimagenet import TINYIMAGENET

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (CIFAR100, TINYIMAGENET, MNIST)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise AuditInputError(f"unknown --preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]
