"""Many processes, one answer: sharding an audit across torchrun ranks.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every rank opens and validates the
same inputs, audits one contiguous range of rows, and the certificate states are combined with
:meth:`CertificateState.all_reduce` (gathered and folded in rank order, so the numbers equal a
single process's to float64 rounding). Only rank 0 hashes input files, prints and writes
reports; every rank computes the verdict and exits with the same code. The process group is
initialised from torchrun's environment variables: gloo for a CPU audit, nccl for CUDA, where
rank r uses GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from ..certificate.state import CertificateState
from ..sources.hashing import hashing_skipped


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks_from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """Rank, world size and local rank as torchrun sets them (a single process without them)."""
    env = os.environ if env is None else env
    return Ranks(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def is_main_process() -> bool:
    """Whether this process is the one that prints and writes reports (rank 0, or not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return ranks_from_env().is_main


def shard_range(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous rows [start, stop) of ``rank``: shards differ in size by at most one row,
    and together cover [0, num_samples) exactly once, in rank order."""
    if not (0 <= rank < world_size):
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return num_samples * rank // world_size, num_samples * (rank + 1) // world_size


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def device_for_rank(device: torch.device, ranks: Ranks) -> torch.device:
    """On CUDA, rank r of a node takes GPU LOCAL_RANK (and makes it the current device)."""
    if device.type == "cuda" and ranks.distributed:
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return device


@contextlib.contextmanager
def process_group(device: torch.device, ranks: Ranks | None = None, skip_hashing: bool = True) -> Iterator[Ranks]:
    """Join torchrun's process group for the audit (nothing when not distributed).

    A group that the caller already initialised is used as it is and left open. Ranks other
    than 0 skip input hashing (rank 0 records the hashes in the report), unless ``skip_hashing``
    is off (the trainer's ranks each check a resume file's fingerprint, hashes included).
    """
    import torch.distributed as dist

    ranks = ranks_from_env() if ranks is None else ranks
    if not ranks.distributed:
        yield ranks
        return
    created = False
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend_for(device), init_method="env://", rank=ranks.rank, world_size=ranks.world_size
        )
        created = True
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), ranks.local_rank)
    try:
        with hashing_skipped() if skip_hashing and not ranks.is_main else contextlib.nullcontext():
            yield ranks
        if created:
            # Every rank's work (rank 0's writing included) is done before any tears the group
            # down: a gloo peer that disconnects while rank 0 is still in the group can abort it.
            dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()


def combine_across_ranks(state: CertificateState, nonfinite_rows: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """All-reduce the certificate state (once) and the non-finite input count; returns the count.

    Every rank ends with the whole audit's state, so every rank raises the same input errors
    and reaches the same verdict.
    """
    if not ranks.distributed:
        return nonfinite_rows
    import torch.distributed as dist

    state.all_reduce()
    total = nonfinite_rows.clone()
    dist.all_reduce(total)
    return total
