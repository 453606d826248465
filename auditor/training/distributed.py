"""Data-parallel training under torchrun: one optimisation, its batches shared out among ranks.

``--batch-size`` is the batch of the whole run, whatever the number of processes W: every rank
draws the same batch order and the same noise (the generators are seeded alike), takes its own
contiguous share of each batch (:func:`~auditor.audit.distributed.shard_range`), weights its loss
by its share of the batch, and the gradients are summed across ranks before every step. For
every loss that is a mean over the batch, the summed gradient is the single-process gradient up
to the order of the additions, so a run on W processes is the same run as on one, to rounding.
(``free-bits`` floors each rank's own batch-mean KL, as every data-parallel free-bits does.)

Every rank starts from the same weights (rank 0's, broadcast) and applies the same update, so
the replicas stay equal; the per-epoch monitor audits one shard of the training data per rank
and combines the certificate states (:meth:`CertificateState.all_reduce`). Only rank 0 writes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..audit.distributed import Ranks, shard_range


def own_share(batch_rows: int, ranks: Ranks) -> slice:
    """This rank's rows of a batch of ``batch_rows`` rows (all of them without torchrun)."""
    begin, end = shard_range(batch_rows, ranks.rank, ranks.world_size)
    return slice(begin, end)


def broadcast_parameters(model: nn.Module, ranks: Ranks) -> None:
    """Rank 0's weights to every rank (their own initialisations agree already; this makes sure)."""
    if not ranks.distributed:
        return
    import torch.distributed as dist

    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def sum_gradients(model: nn.Module, ranks: Ranks) -> None:
    """Every parameter's gradient summed over the ranks, in one all-reduce of one flat buffer."""
    if not ranks.distributed:
        return
    import torch.distributed as dist

    # Parameters without a gradient (the decoder during a prefit phase) have none on any rank:
    # every rank runs the same forward passes. Adam leaves them untouched, as on one process.
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]  # filtered above
    dist.all_reduce(flat)
    offset = 0
    for param in params:
        param.grad = flat[offset : offset + param.numel()].view_as(param)
        offset += param.numel()


def sum_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """``values`` summed over the ranks (the epoch's loss sums, each rank over its share)."""
    if not ranks.distributed:
        return values
    import torch.distributed as dist

    total = values.clone()
    dist.all_reduce(total)
    return total
