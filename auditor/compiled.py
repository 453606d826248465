"""Loops compiled by numba for the CPU: when they pay, and how they are compiled.

:func:`compiled` is numba's ``njit`` with the GIL released (the loops run on the audit's helper
threads beside the forward passes) and the machine code cached on disk: compiled once per
installation (about 2 s on a 2-core AMD EPYC, numba's set-up included), then loaded from the
cache. numba keeps the cache beside the module, or in the user's cache folder when the
installation is read-only; where it can write neither, the loops are compiled in each process
that uses them instead of failing.

Loading them is not free: numba's import and the set-up of its CPU target took about 0.5 s the
first time a process used a loop (and 90 MB more peak memory), while the loops save about 20 ns
per teacher probability in the certificate update and the teacher's repair (per 100,000 rows on
one thread: 0.06 CPU s at K = 10, 0.22 s at K = 100, 0.4 s at K = 200). So they are used where
the class count makes each row's work large (:func:`pays_off`): at K = 10 they would pay for
their load only beyond about 800,000 rows, at K = 200 beyond about 125,000.
"""

from __future__ import annotations

COMPILED_FROM_CLASSES = 64


def pays_off(num_classes: int) -> bool:
    """Whether the CPU's compiled loops are used for a teacher of ``num_classes`` classes."""
    return num_classes >= COMPILED_FROM_CLASSES


def compiled(**options):
    """A decorator: the function compiled by numba in nopython mode, GIL released, cached where
    possible; ``options`` go to ``njit`` (``fastmath`` for instance)."""
    from numba import njit

    def decorate(function):
        try:
            return njit(cache=True, nogil=True, **options)(function)
        except RuntimeError:  # numba's "cannot cache function …: no locator available for file …"
            return njit(nogil=True, **options)(function)

    return decorate
