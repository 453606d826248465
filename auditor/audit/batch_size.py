"""Batch sizes: recognising out-of-memory errors and choosing ``--batch-size auto``.

On CUDA, ``auto`` probes: it runs the real per-batch work (encoder, teacher, certificate update)
on the first rows at 256, 512, 1024, … samples until a batch runs out of memory or the cap is
reached, and keeps the largest that fitted. On a CPU there is nothing to probe (memory is
rarely the limit, cache locality is): ``auto`` takes as many rows as fit in
``CPU_BATCH_BYTES`` of float32 inputs, between ``CPU_MIN_BATCH`` and ``CPU_MAX_BATCH``.
A batch that still runs out of memory later is halved and retried by the pass itself.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

CPU_BATCH_BYTES = 32 << 20  # float32 inputs of one batch on a CPU: 32 MiB
CPU_MIN_BATCH, CPU_MAX_BATCH = 64, 1024
CUDA_FIRST_PROBE, CUDA_MAX_BATCH = 256, 65536


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the device's out-of-memory error (torch.cuda.OutOfMemoryError and its kin)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def parse_batch_size(value: int | str) -> int | str:
    """``--batch-size``: a positive integer or ``auto`` (returned as the string)."""
    from ..errors import AuditInputError

    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = int(value)
        except ValueError:
            raise AuditInputError(f"--batch-size must be a positive integer or 'auto', got {value!r}") from None
    if isinstance(value, bool) or value < 1:
        raise AuditInputError(f"--batch-size must be a positive integer or 'auto', got {value!r}")
    return int(value)


def cpu_batch_size(sample_shape: tuple[int, ...]) -> int:
    """The CPU rule: rows of float32 inputs that fit in CPU_BATCH_BYTES, clamped to [64, 1024]."""
    per_sample = 4 * max(1, math.prod(sample_shape))
    return int(min(CPU_MAX_BATCH, max(CPU_MIN_BATCH, CPU_BATCH_BYTES // per_sample)))


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
            _release_cached_memory()
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


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def auto_batch_size(plan, state_factory: Callable[[], object], device: torch.device,
                    sample_shape: tuple[int, ...] | None, precision: str = "fp32") -> int:
    """``--batch-size auto`` for ``plan`` on ``device`` (see the module docstring)."""
    if device.type != "cuda":
        return cpu_batch_size(sample_shape or (1,))
    from . import stream as extract

    cap = max(1, min(CUDA_MAX_BATCH, plan.num_samples))

    @torch.no_grad()
    def try_batch(size: int) -> None:
        host = extract._read_host_batch(plan.sources, 0, size, pin=False)
        batch = {role: extract._copy_to(t, device) for role, t in host.items()}
        extract.update_from_batch(plan, state_factory(), batch, precision)
        torch.cuda.synchronize(device)  # surface an asynchronous failure here, not in the pass

    return largest_fitting_batch(try_batch, CUDA_FIRST_PROBE, cap)
