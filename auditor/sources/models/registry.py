"""Every model source, in the order each is asked whether a request is its own."""

from __future__ import annotations

from pathlib import Path

from ...errors import AuditInputError
from .diffusers_folder import DiffusersFolder
from .factory import Factory
from .interface import ModelRequest, ModelSource
from .latents import Latents
from .pythae_folder import PythaeFolder
from .torch_checkpoint import TorchCheckpoint
from .vae_audit import VaeAuditCheckpoint

MODEL_SOURCES: tuple[ModelSource, ...] = (
    Latents(),
    PythaeFolder(),
    DiffusersFolder(),
    TorchCheckpoint(),
    Factory(),
    VaeAuditCheckpoint(),
)


def model_source_for(request: ModelRequest) -> ModelSource:
    for source in MODEL_SOURCES:
        if source.wanted(request):
            return source
    if request.model is not None and Path(request.model).is_dir():
        raise AuditInputError(
            f"{request.model}: a folder, but neither a diffusers model (config.json with _class_name, or a pipeline's "
            "model_index.json with vae/) nor a pythae model (model_config.json and model.pt)"
        )
    raise AuditInputError("give exactly one of --model, --arch (optionally with --model weights) or --latents")
