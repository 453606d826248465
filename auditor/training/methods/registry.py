"""Every training method by its ``--method`` name, in one explicit table (in the order ``--help`` lists them)."""

from __future__ import annotations

from ...errors import AuditInputError
from .aligned import Aligned, Prefit
from .base import Method
from .decoders import ConstVarAligned, ConstVarMethod, LIDVAEAligned, LIDVAEMethod
from .elbo import Beta, Cyclical, FreeBits, KLAnneal

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(),
        Aligned(),
        Prefit(),
        Beta(),
        FreeBits(),
        KLAnneal(),
        Cyclical(),
        LIDVAEMethod(),
        LIDVAEAligned(),
        ConstVarMethod(),
        ConstVarAligned(),
    )
}


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method of your own (a :class:`Method` subclass) under its ``name``; usable as a decorator."""
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise AuditInputError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]
