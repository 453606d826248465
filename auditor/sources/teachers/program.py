"""A torch.export program (``.pt2``) as the teacher: x → logits, probabilities by softmax in float64.

Loading a ``.pt2`` file unpickles it, which can run code: it is accepted only when the caller
says it trusts the file (``--trust-teacher-code``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import AuditInputError
from ..regular_files import open_input


class ProgramTeacher(nn.Module):
    """A trusted torch.export program that maps x to logits; probabilities by softmax in float64."""

    kind = "torch-export"

    def __init__(self, module: nn.Module, num_classes: int, input_dim: int | None):
        super().__init__()
        self.module = module
        self.num_classes = num_classes
        self.input_dim = input_dim

    def train(self, mode: bool = True) -> ProgramTeacher:
        # An exported program has no train/eval modes (it refuses .train()); it runs as exported.
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.module(x)
        return torch.softmax(logits.to(torch.float64), dim=1)


def load_program(path: Path, trust_code: bool, input_shape: tuple[int, ...] | None) -> ProgramTeacher:
    if not trust_code:
        raise AuditInputError(
            f"{path}: refused: a .pt2 program is unpickled when loaded and can run code; "
            "pass --trust-teacher-code only for a file you trust"
        )
    try:
        with open_input(path) as handle:
            module = torch.export.load(handle).module()
    except AuditInputError:
        raise
    except Exception as exc:  # torch.export raises many types for foreign or truncated files
        raise AuditInputError(f"{path}: not a loadable torch.export program ({type(exc).__name__})") from None
    if input_shape is None:
        raise AuditInputError(f"{path}: a .pt2 teacher needs input data to run on")
    with torch.no_grad():
        try:
            logits = module(torch.zeros((1, *input_shape), dtype=torch.float32))
        except Exception as exc:
            raise AuditInputError(
                f"{path}: the teacher program does not accept a batch of inputs of shape {tuple(input_shape)} "
                f"({type(exc).__name__}); export it with a dynamic batch dimension"
            ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < 2:
        raise AuditInputError(f"{path}: the teacher program must return logits of shape (batch, K) with K >= 2")
    return ProgramTeacher(module, int(logits.shape[1]), int(np.prod(input_shape)))
