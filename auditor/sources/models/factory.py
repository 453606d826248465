"""``--arch FACTORY`` with, optionally, ``--model weights.safetensors``: any ``nn.Module`` with ``encode(x)``,
built by the user's factory (:mod:`auditor.sources.models.arch`). Running the factory runs the user's
code: only ``--arch`` asks for it. Without ``--model`` the module keeps the weights the factory gave it."""

from __future__ import annotations

from pathlib import Path

from ...errors import AuditInputError
from ..checkpoint import KEY_WITNESS, load_state_into, read_tensors, witness_metadata
from ..hashing import file_record
from ..safetensors_header import safetensors_metadata
from .arch import arch_encoder, build_arch, strip_prefix
from .interface import Encoder, FixedWitness, ModelRequest, ModelSource
from .torch_pickle import CHECKPOINT_SUFFIXES


class Factory(ModelSource):
    @staticmethod
    def wanted(request: ModelRequest) -> bool:
        return request.arch is not None and (request.model is None or not Path(request.model).is_dir())

    def open(self, request: ModelRequest) -> Encoder:
        if request.model is None:
            return arch_encoder(build_arch(request), request, [], {}, witness=None)
        path = Path(request.model)
        if path.suffix.lower() != ".safetensors":
            raise AuditInputError(
                f"{path}: --arch reads weights from .safetensors or {', '.join(CHECKPOINT_SUFFIXES)} files"
            )
        meta = safetensors_metadata(path)
        built = build_arch(request)
        load_state_into(built.module, strip_prefix(read_tensors(path), request.key_prefix, path), path)
        witness = FixedWitness(witness_metadata(meta, path), str(path)) if KEY_WITNESS in meta else None
        details = {"format": "safetensors", "key_prefix": request.key_prefix}
        return arch_encoder(built, request, [file_record("model", path)], details, witness)
