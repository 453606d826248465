"""The seam for model sources: where an audit's latent means come from.

A model source turns what the user named — a vae-audit checkpoint, an ``--arch`` factory with
its weights, a diffusers or pythae folder, precomputed latents — into an :class:`Encoder`: either a module whose ``encode(x)`` the pass
runs on the data, or arrays of precomputed means. Each source is one class implementing
:class:`ModelSource`; :mod:`auditor.sources.models.registry` lists them in the order they are
asked whether a request is theirs. A new format is one new class and its tests: the audit
pipeline does not change. What a source may read from the request is :class:`ModelRequest`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from torch import nn

from ..arrays import ArrayReader
from ..hashing import InputRecord


class ModelRequest(Protocol):
    """The fields of an audit request that model sources read."""

    model: Path | None
    arch: str | None
    arch_args: tuple[str, ...]
    key_prefix: str | None
    state_key: str | None
    trust_code: bool
    latents: Path | None
    limit: int | None
    precision: str


@dataclass(frozen=True)
class FixedWitness:
    """A witness (K, β, offset) fixed by a model file's metadata, and the file that fixed it."""

    spec: dict  # {"num_classes", "beta", "offset"}
    where: str


@dataclass
class Encoder:
    """What a model source hands the audit.

    Exactly one of ``module`` (run ``encode(x)`` on the data, reshaped to ``input_shape`` when
    given) and ``rows`` (precomputed ``mu``, optionally ``logvar``) is set.
    """

    record: dict  # the certificate's "model" entry
    inputs: list[InputRecord]
    module: nn.Module | None = None
    input_shape: tuple[int, ...] | None = None
    rows: dict[str, ArrayReader] = field(default_factory=dict)
    witness: FixedWitness | None = None


class ModelSource(ABC):
    needs_data = True  # whether the encoder runs on the audit data (precomputed latents do not)

    @staticmethod
    @abstractmethod
    def wanted(request: ModelRequest) -> bool:
        """Whether ``request`` names this kind of model."""

    @abstractmethod
    def open(self, request: ModelRequest) -> Encoder:
        """Read and check the model's files (on the CPU); refuse anything wrong with AuditInputError."""
