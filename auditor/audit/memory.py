"""Out of device memory: recognising the error, and finding the largest batch that fits."""

from __future__ import annotations

from collections.abc import Callable

import torch


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the device's out-of-memory error (torch.cuda.OutOfMemoryError and its kin)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def largest_fitting_batch(try_batch: Callable[[int], None], first: int, cap: int) -> int:
    """Double from ``first`` while ``try_batch(size)`` succeeds (up to ``cap``); the largest success.

    ``try_batch`` raises an out-of-memory error when a size does not fit. When even ``first``
    does not fit, halve down until one does (1 at the least).
    """
    size = max(1, min(first, cap))
    best = 0
    while True:
        try:
            try_batch(size)
            fitted = True
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            fitted = False
        if not fitted:  # handled here, once the exception's frames (and tensors) are gone
            release_cached_memory()
            if best:
                return best
            if size == 1:
                return 1  # let the pass itself report the failure at batch size 1
            size //= 2
            continue
        best = size
        if size >= cap:
            return best
        size = min(size * 2, cap)


def release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
