"""Methods that add the raw witness alignment KL(p‖softmax(βSᵀμ)) against the fixed teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    from ..config import TrainConfig


class Aligned(Method):
    name = "aligned"
    summary = "ELBO + α·KL(p‖softmax(βSᵀμ)), the raw witness alignment against the fixed teacher"
    uses_alignment = True


class Prefit(Aligned):
    name = "prefit"
    summary = "regress μ onto the analytic code μ*(p) for --prefit-epochs, then train as aligned"

    def prefit_epochs(self, cfg: TrainConfig) -> int:
        return cfg.prefit_epochs
