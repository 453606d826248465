"""Where and how a training run computes: the device, the forward precision, determinism, noise.

- ``--device auto|cpu|cuda`` is resolved as ``audit certify`` resolves it (auto: CUDA when present).
- ``--precision bf16`` runs the model's forward passes under autocast; the loss terms that
  compare distributions (the alignment loss, the KL) and the monitor are computed in float32 and
  float64 as with fp32. (fp16 would need loss scaling, so the trainer does not offer it.)
- On a CPU a run uses deterministic kernels on ``--threads`` threads, and every draw comes from
  one CPU generator seeded by ``--seed``: the same inputs give the same checkpoint bytes. On CUDA
  the batch order still comes from that CPU generator and the noise from a CUDA generator seeded
  by ``--seed``, but kernels are left free to choose non-deterministic algorithms (cuDNN's
  convolution backward, atomic additions), which are the fast ones: two CUDA runs agree in
  distribution, not bit for bit (docs/training.md, "Determinism").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..audit.forward import forward_context
from ..audit.request import resolve_device
from ..errors import AuditInputError

TRAINING_PRECISIONS = ("fp32", "bf16")


def training_device(name: str) -> torch.device:
    """The device ``--device`` names (``auto``: CUDA when available), refused when absent."""
    return resolve_device(name)


def check_precision(precision: str) -> str:
    if precision not in TRAINING_PRECISIONS:
        raise AuditInputError(f"unknown --precision {precision!r} for training (use {', '.join(TRAINING_PRECISIONS)})")
    return precision


def autocast(device: torch.device, precision: str):
    """The model's forward passes at ``precision`` (a no-op for fp32, so fp32 runs are unchanged)."""
    return forward_context(device, check_precision(precision))


@contextlib.contextmanager
def deterministic(threads: int, device: torch.device) -> Iterator[None]:
    """On a CPU: deterministic kernels and a fixed intra-op thread count (restored afterwards).

    With several threads MKL may pick kernels by the load it sees, so the same run on a busy
    machine can round differently; one thread (the default) gives the same bytes every time.
    On CUDA nothing is forced (see the module docstring); the thread count still applies to the
    host's share of the work.
    """
    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])


def noise_generator(seed: int, device: torch.device, cpu_generator: torch.Generator) -> torch.Generator:
    """The generator of the reparameterisation noise: on a CPU the run's own generator (one stream
    for batch order and noise, as always), on CUDA one on the device, so noise is drawn there."""
    if device.type == "cpu":
        return cpu_generator
    return torch.Generator(device).manual_seed(seed)
