"""The certificate update's transcendental and arg-max kernels, through numpy on a CPU.

Measured on the benchmark's CPU (AMD EPYC, AVX-512, one thread) on a 1024×200 float64 batch:
numpy's exp took 0.17 ms where torch's took 0.48, log 0.17 against 0.46, expm1 0.27 against
0.51, and the arg-max along rows 0.035 ms against 0.22. These were about a third of the update
at K = 200. numpy works on the tensors' own memory (``Tensor.numpy()`` is a view, not a copy),
and writes into the caller's buffer. On any other device the same functions are torch's.
Both libraries round each value to within an ulp or two of the exact result, so the
certificate's numbers agree to float64 rounding whichever runs.
"""

from __future__ import annotations

import numpy as np
import torch


def _on_cpu_through_numpy(torch_kernel, numpy_kernel, x: torch.Tensor, out: torch.Tensor, **ignored) -> torch.Tensor:
    """``out`` = kernel(``x``): numpy's on a CPU, with the floating-point conditions ``ignored``
    names left silent (they give inf or NaN, as torch's do); torch's elsewhere."""
    if out.device.type != "cpu":
        return torch_kernel(x, out=out)
    with np.errstate(**ignored):
        numpy_kernel(x.numpy(), out=out.numpy())
    return out


def exp(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` = exp(``x``) (``out`` may be ``x``); inf on overflow."""
    return _on_cpu_through_numpy(torch.exp, np.exp, x, out, over="ignore")


def log(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` = log(``x``) (``out`` may be ``x``); NaN for negative values, −inf for 0 (bad rows are
    counted and refused by the state later)."""
    return _on_cpu_through_numpy(torch.log, np.log, x, out, divide="ignore", invalid="ignore")


def expm1(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` = exp(``x``) − 1, accurate near 0 (``out`` may be ``x``); inf on overflow."""
    return _on_cpu_through_numpy(torch.expm1, np.expm1, x, out, over="ignore")


def row_argmax(x: torch.Tensor) -> torch.Tensor:
    """The index of each row's largest value, int64; the first on ties, as torch's and numpy's."""
    if x.device.type != "cpu":
        return x.argmax(dim=1)
    return torch.from_numpy(x.numpy().argmax(axis=1))
