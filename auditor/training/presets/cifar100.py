"""``cifar100``: the CIFAR-100 experiment of arXiv 2605.05813 (a teacher searched per seed; full
training stays certified, removing the alignment collapses the raw witness, restarting from the
collapse with alignment rescues it; standard baselines stay negative), with the CIFAR rows of
arXiv 2605.18224 (RST-prefit, KL-weight stress at 2, 4, 8).

The papers' hyper-parameters are not public: every value below is a default chosen before any
run, with its reason in docs/reproduce.md.
"""

from __future__ import annotations

from ..reproduce import BASELINE_ROWS, Row, kl_weight_rows
from .base import Preset

ROWS = (
    Row("aligned", "aligned"),  # prevention: full training with the raw witness alignment
    Row("collapse", protocol="collapse", init_from="aligned"),  # alignment removed, strong KL
    Row("rescue", protocol="rescue", init_from="collapse"),  # restart from the collapse, aligned
    Row("vanilla", "vanilla"),
    Row("prefit", "prefit"),
    *kl_weight_rows((2, 4, 8)),
    *BASELINE_ROWS,
)

CIFAR100 = Preset(
    name="cifar100",
    paper="arXiv 2605.05813, CIFAR-100 (with the CIFAR rows of arXiv 2605.18224)",
    sample_shape=(3, 32, 32),
    settings={"arch": "conv", "channels": (32, 64, 128), "latent_dim": 64, "batch_size": 128, "lr": 1e-3},
    epochs=100,
    seeds=(0, 1, 2, 3, 4),
    rows=ROWS,
    teachers="per-seed",
)
