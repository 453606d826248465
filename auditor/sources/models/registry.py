"""Every model source, in the order each is asked whether a request is its own."""

from __future__ import annotations

from ...errors import AuditInputError
from .factory import Factory
from .interface import ModelRequest, ModelSource
from .latents import Latents
from .vae_audit import VaeAuditCheckpoint

MODEL_SOURCES: tuple[ModelSource, ...] = (Latents(), Factory(), VaeAuditCheckpoint())


def model_source_for(request: ModelRequest) -> ModelSource:
    for source in MODEL_SOURCES:
        if source.wanted(request):
            return source
    raise AuditInputError("give exactly one of --model, --arch (optionally with --model weights) or --latents")
