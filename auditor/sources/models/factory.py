"""``--arch module:factory`` (optionally with ``--model`` weights): any ``nn.Module`` with ``encode(x)``,
built by calling ``factory()``. Running the factory runs the user's code: only ``--arch`` asks for it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from torch import nn

from ...errors import AuditInputError
from ..checkpoint import KEY_WITNESS, load_state_into, read_tensors, witness_metadata
from ..hashing import file_record
from ..safetensors_header import safetensors_metadata
from .interface import Encoder, FixedWitness, ModelRequest, ModelSource


def import_factory(spec: str) -> nn.Module:
    """The module built by ``factory()`` of ``module:factory`` (the current folder is importable)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AuditInputError(f"--arch must look like module:factory, got {spec!r}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # so that a user's local module is found
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise AuditInputError(f"--arch {spec}: cannot import module {module_name!r} ({exc})") from None
    except AttributeError:
        raise AuditInputError(f"--arch {spec}: module {module_name!r} has no {attr!r}") from None
    model = factory()
    if not isinstance(model, nn.Module) or not callable(getattr(model, "encode", None)):
        raise AuditInputError(f"--arch {spec}: the factory must return an nn.Module with an encode(x) method")
    return model


class Factory(ModelSource):
    @staticmethod
    def wanted(request: ModelRequest) -> bool:
        return request.arch is not None

    def open(self, request: ModelRequest) -> Encoder:
        assert request.arch is not None  # the registry opens a source only for a request it wanted
        module = import_factory(request.arch)
        inputs, witness = [], None
        if request.model:
            path = Path(request.model)
            if path.suffix.lower() != ".safetensors":
                raise AuditInputError(f"{path}: weights are read from .safetensors files only")
            meta = safetensors_metadata(path)
            load_state_into(module, read_tensors(path), path)
            inputs.append(file_record("model", path))
            if KEY_WITNESS in meta:
                witness = FixedWitness(witness_metadata(meta, path), str(path))
        module.eval()
        record = {"source": "arch", "factory": request.arch, "weights": str(request.model) if request.model else None}
        return Encoder(record=record, inputs=inputs, module=module, witness=witness)
