"""Batch sizes: ``--batch-size N|auto``, and what ``auto`` chooses on each device.

On CUDA, ``auto`` probes: it runs the real per-batch work (encoder, teacher, certificate update)
on the first rows at 256, 512, 1024, … samples until a batch runs out of memory or the cap is
reached, and keeps the largest that fitted. On a CPU there is nothing to probe (memory is
rarely the limit, cache locality is): ``auto`` takes as many rows as fit in
``CPU_BATCH_BYTES`` of float32 inputs, between ``CPU_MIN_BATCH`` and ``CPU_MAX_BATCH``.
A batch that still runs out of memory later is halved and retried by the pass itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

from ..certificate.state import CertificateState
from ..errors import AuditInputError
from . import prefetch, transfer
from .forward import update_from_batch
from .memory import largest_fitting_batch

CPU_BATCH_BYTES = 32 << 20  # float32 inputs of one batch on a CPU: 32 MiB
CPU_MIN_BATCH, CPU_MAX_BATCH = 64, 1024
CUDA_FIRST_PROBE, CUDA_MAX_BATCH = 256, 65536


def parse_batch_size(value: int | str) -> int | Literal["auto"]:
    """``--batch-size``: a positive integer or ``auto`` (returned as the string)."""
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


def auto_batch_size(
    plan,
    state_factory: Callable[[], CertificateState],
    device: torch.device,
    sample_shape: tuple[int, ...] | None,
    precision: str = "fp32",
) -> int:
    """``--batch-size auto`` for ``plan`` on ``device`` (see the module docstring)."""
    if device.type != "cuda":
        return cpu_batch_size(sample_shape or (1,))
    cap = max(1, min(CUDA_MAX_BATCH, plan.num_samples))

    @torch.no_grad()
    def try_batch(size: int) -> None:
        host = prefetch.read_host_batch(plan.sources, (0, size), pin=False)
        batch = {role: transfer.copy_to(t, device) for role, t in host.items()}
        update_from_batch(plan, state_factory(), batch, precision)
        torch.cuda.synchronize(device)  # surface an asynchronous failure here, not in the pass

    return largest_fitting_batch(try_batch, CUDA_FIRST_PROBE, cap)
