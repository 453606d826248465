"""Loops compiled by numba for the CPU, and the one place that says how they are compiled.

:func:`compiled` is numba's ``njit`` with the GIL released (the loops run on the audit's helper
threads beside the forward passes) and the machine code cached on disk: compiled once per
installation (about 1.3 s for the certificate update's loops on a 2-core AMD EPYC), then loaded
from the cache (about 0.1 s a process, after numba's own import, 0.2 s). numba keeps the cache
beside the module, or in the user's cache folder when the installation is read-only; where it
can write neither, the loops are compiled in each process that uses them instead of failing.
"""

from __future__ import annotations

from numba import njit


def compiled(**options):
    """A decorator: the function compiled by numba in nopython mode, GIL released, cached where
    possible; ``options`` go to ``njit`` (``fastmath`` for instance)."""

    def decorate(function):
        try:
            return njit(cache=True, nogil=True, **options)(function)
        except RuntimeError:  # numba's "cannot cache function …: no locator available for file …"
            return njit(nogil=True, **options)(function)

    return decorate
