"""``--arch FACTORY --model weights.pt|.pth|.ckpt``: a PyTorch or Lightning checkpoint (read weights-only,
:mod:`auditor.sources.models.torch_pickle`) loaded strictly into the module the factory builds.

``--key-prefix P`` keeps the tensors whose names start with P and strips it (a LightningModule's
``state_dict`` names its sub-modules' tensors ``model.…``; DataParallel's ``module.…``);
``--state-key K`` names the entry that holds the state dict.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_state_into
from ..hashing import file_record
from .arch import arch_encoder, build_arch, strip_prefix
from .interface import Encoder, ModelRequest, ModelSource
from .torch_pickle import CHECKPOINT_SUFFIXES, read_torch_state


class TorchCheckpoint(ModelSource):
    @staticmethod
    def wanted(request: ModelRequest) -> bool:
        return (
            request.arch is not None
            and request.model is not None
            and Path(request.model).suffix.lower() in CHECKPOINT_SUFFIXES
        )

    def open(self, request: ModelRequest) -> Encoder:
        assert request.model is not None  # the registry opens a source only for a request it wanted
        path = Path(request.model)
        tensors, details = read_torch_state(path, request.state_key)
        built = build_arch(request)
        weights = strip_prefix(tensors, request.key_prefix, path)
        load_state_into(built.module, weights, path)
        details.update(key_prefix=request.key_prefix, tensors_not_read=len(tensors) - len(weights))
        return arch_encoder(built, request, [file_record("model", path)], details, witness=None)
