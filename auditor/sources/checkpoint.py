"""``vae.safetensors``: a model's state dict plus the ``vae_audit.*`` metadata of docs/formats.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import torch
from safetensors.torch import load_file, save
from torch import nn

from ..errors import AuditInputError
from ..nets.registry import build_model
from .atomic import atomic_write_bytes
from .safetensors_header import safetensors_metadata

FORMAT_VERSION = "1"
KEY_FORMAT, KEY_ARCH, KEY_WITNESS, KEY_TRAINING = (
    "vae_audit.format",
    "vae_audit.architecture",
    "vae_audit.witness",
    "vae_audit.training",
)


@dataclass
class Checkpoint:
    model: nn.Module
    architecture: dict
    witness: dict  # {"num_classes", "beta", "offset"}
    training: dict | None
    path: Path


@overload
def _json_field(meta: dict, key: str, path: Path, required: Literal[True] = True) -> dict: ...


@overload
def _json_field(meta: dict, key: str, path: Path, required: bool) -> dict | None: ...


def _json_field(meta: dict, key: str, path: Path, required: bool = True) -> dict | None:
    if key not in meta:
        if required:
            raise AuditInputError(
                f"{path}: safetensors file has no {key!r} metadata (not a vae-audit checkpoint; use --arch or --latents for other models)"
            )
        return None
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError:
        raise AuditInputError(f"{path}: metadata {key!r} is not valid JSON") from None
    if not isinstance(value, dict):
        raise AuditInputError(f"{path}: metadata {key!r} must be a JSON object")
    return value


def witness_metadata(meta: dict, path: Path) -> dict:
    witness = _json_field(meta, KEY_WITNESS, path)
    K, beta, offset = witness.get("num_classes"), witness.get("beta"), witness.get("offset", 0)
    if (
        not (isinstance(K, int) and not isinstance(K, bool))
        or not isinstance(beta, (int, float))
        or not isinstance(offset, int)
    ):
        raise AuditInputError(f"{path}: {KEY_WITNESS} must give integer num_classes, numeric beta and integer offset")
    return {"num_classes": K, "beta": float(beta), "offset": offset}


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: no such model file")
    if path.suffix.lower() != ".safetensors":
        raise AuditInputError(
            f"{path}: models are read from .safetensors files only (pickled checkpoints are never loaded)"
        )
    meta = safetensors_metadata(path)
    if meta.get(KEY_FORMAT) is None:
        raise AuditInputError(
            f"{path}: safetensors file has no vae_audit metadata (not a vae-audit checkpoint; use --arch or --latents for other models)"
        )
    if meta[KEY_FORMAT] != FORMAT_VERSION:
        raise AuditInputError(
            f"{path}: unsupported vae_audit.format {meta[KEY_FORMAT]!r} (this tool reads {FORMAT_VERSION!r})"
        )
    arch = _json_field(meta, KEY_ARCH, path)
    witness = witness_metadata(meta, path)
    training = _json_field(meta, KEY_TRAINING, path, required=False)
    model = build_model(arch, where=str(path))
    load_state_into(model, load_file(str(path)), path)
    model.eval()
    return Checkpoint(model, arch, witness, training, path)


def load_state_into(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Strictly load ``tensors`` into ``model``; any missing, extra or misshapen tensor is an error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise AuditInputError(
            f"{path}: tensors do not match the architecture (missing: {', '.join(missing[:4]) or 'none'}; "
            f"unexpected: {', '.join(extra[:4]) or 'none'})"
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise AuditInputError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, the architecture needs {tuple(expected[name].shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise AuditInputError(f"{path}: tensor {name!r} contains NaN or inf")
    model.load_state_dict(tensors, strict=True)


def checkpoint_bytes(model: nn.Module, architecture: dict, witness: dict, training: dict | None = None) -> bytes:
    """The checkpoint file's bytes: deterministic for the same tensors and metadata."""
    meta = {
        KEY_FORMAT: FORMAT_VERSION,
        KEY_ARCH: json.dumps(architecture, sort_keys=True),
        KEY_WITNESS: json.dumps(witness, sort_keys=True),
    }
    if training is not None:
        meta[KEY_TRAINING] = json.dumps(training, sort_keys=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return _canonical_header(save(tensors, metadata=meta))


def _canonical_header(raw: bytes) -> bytes:
    """The same file with its JSON header in sorted key order.

    safetensors serialises the metadata from a hash map, whose order changes from run to run;
    re-ordering the keys (the offsets stay valid, the length is padded with spaces as the format
    allows) makes equal tensors and metadata give equal bytes.
    """
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    ordered = {key: header[key] for key in sorted(header)}
    if "__metadata__" in ordered:
        ordered["__metadata__"] = dict(sorted(ordered["__metadata__"].items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > size:  # cannot happen for the same content; keep the valid original
        return raw
    return raw[:8] + text.ljust(size, b" ") + raw[8 + size :]


def save_checkpoint(
    path: str | Path, model: nn.Module, architecture: dict, witness: dict, training: dict | None = None
) -> None:
    atomic_write_bytes(path, checkpoint_bytes(model, architecture, witness, training))
