"""``--model vae.safetensors``: a checkpoint in vae-audit's own format (docs/formats.md), whose metadata
fixes the architecture and the witness."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_checkpoint
from ..hashing import file_record
from .digest import weights_digest
from .interface import Encoder, FixedWitness, ModelRequest, ModelSource
from .libraries import library_versions


class VaeAuditCheckpoint(ModelSource):
    @staticmethod
    def wanted(request: ModelRequest) -> bool:
        return request.model is not None and request.arch is None and not Path(request.model).is_dir()

    def open(self, request: ModelRequest) -> Encoder:
        assert request.model is not None  # the registry opens a source only for a request it wanted
        path = Path(request.model)
        ckpt = load_checkpoint(path)
        return Encoder(
            record={
                "source": "checkpoint",
                "path": str(path),
                "architecture": ckpt.architecture,
                "training": ckpt.training,
                "weights_digest": weights_digest(ckpt.model.state_dict(), "the whole state_dict (encoder and decoder)"),
                "libraries": library_versions("torch", "safetensors"),
            },
            inputs=[file_record("model", path)],
            module=ckpt.model,
            input_shape=tuple(ckpt.architecture["input_shape"]),
            witness=FixedWitness(ckpt.witness, str(path)),
        )
