"""Optional libraries a model source needs (diffusers, pythae): imported only when such a model is
read, and recorded by version in the certificate."""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

from ...errors import AuditInputError


def require(module: str, extra: str, what: str) -> ModuleType:
    """``import module``, or one line saying which extra of vae-audit installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AuditInputError(
            f"{what} needs the optional package {module.split('.')[0]!r}, which cannot be imported ({exc}): "
            f"pip install 'vae-audit[{extra}]'"
        ) from None


def library_versions(*distributions: str) -> dict[str, str]:
    """The installed version of each distribution (those not installed are left out)."""
    versions = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
