"""``vae.safetensors``: a model's state dict plus the ``vae_audit.*`` metadata of docs/formats.md.

A checkpoint is read in an order that lets it make the tool allocate only what the file itself
holds: the header (:mod:`auditor.sources.safetensors_header`), the metadata's JSON, the
architecture built on the meta device within the parameter budget
(:func:`auditor.nets.registry.model_skeleton`), every tensor's name, shape and floating-point
dtype in the header compared with it — and only then the model and the tensor data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import safetensors.torch
import torch
from safetensors.torch import save
from torch import nn

from ..certificate.json_input import is_json_int, is_json_number, parse_json
from ..errors import AuditInputError, shown, shown_text
from ..nets.registry import MAX_PARAMETERS, build_model, model_skeleton
from .atomic import atomic_write_bytes
from .regular_files import read_input
from .safetensors_header import MAX_HEADER_BYTES, SafetensorsHeader, read_safetensors_header

FORMAT_VERSION = "1"
KEY_FORMAT, KEY_ARCH, KEY_WITNESS, KEY_TRAINING = (
    "vae_audit.format",
    "vae_audit.architecture",
    "vae_audit.witness",
    "vae_audit.training",
)
MAX_METADATA_DEPTH = 16
# The file is read whole: a header, then at most the parameter budget in float64.
MAX_CHECKPOINT_BYTES = MAX_HEADER_BYTES + 8 * MAX_PARAMETERS
FLOAT_CODES = ("F16", "BF16", "F32", "F64")


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
    value = parse_json(
        meta[key].encode("utf-8", "surrogatepass"), f"{path}: metadata {key!r}", MAX_HEADER_BYTES, MAX_METADATA_DEPTH
    )
    if not isinstance(value, dict):
        raise AuditInputError(f"{path}: metadata {key!r} must be a JSON object")
    return value


def witness_metadata(meta: dict, path: Path) -> dict:
    witness = _json_field(meta, KEY_WITNESS, path)
    K, beta, offset = witness.get("num_classes"), witness.get("beta"), witness.get("offset", 0)
    if not (is_json_int(K) and is_json_number(beta) and is_json_int(offset)):  # True is an int to Python, not here
        raise AuditInputError(f"{path}: {KEY_WITNESS} must give integer num_classes, numeric beta and integer offset")
    return {"num_classes": K, "beta": float(beta), "offset": offset}


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.exists():
        raise AuditInputError(f"{path}: no such model file")
    if path.suffix.lower() != ".safetensors":
        raise AuditInputError(
            f"{path}: models are read from .safetensors files only (pickled checkpoints are never loaded)"
        )
    header = read_safetensors_header(path)
    meta = header.metadata
    if meta.get(KEY_FORMAT) is None:
        raise AuditInputError(
            f"{path}: safetensors file has no vae_audit metadata (not a vae-audit checkpoint; use --arch or --latents for other models)"
        )
    if meta[KEY_FORMAT] != FORMAT_VERSION:
        raise AuditInputError(
            f"{path}: unsupported vae_audit.format {shown(meta[KEY_FORMAT])} (this tool reads {FORMAT_VERSION!r})"
        )
    arch = _json_field(meta, KEY_ARCH, path)
    witness = witness_metadata(meta, path)
    training = _json_field(meta, KEY_TRAINING, path, required=False)
    _check_declared_tensors(model_skeleton(arch, where=str(path)), header, path)
    model = build_model(arch, where=str(path))
    load_state_into(model, read_tensors(path), path)
    model.eval()
    return Checkpoint(model, arch, witness, training, path)


def _check_declared_tensors(skeleton: nn.Module, header: SafetensorsHeader, path: Path) -> None:
    """The header's tensors are exactly the architecture's, in floating point: checked before
    the data are read, so a checkpoint can make the tool allocate only what the file holds."""
    _check_names(skeleton.state_dict(), header.tensors, path)
    for name, tensor in skeleton.state_dict().items():
        entry = header.tensors[name]
        if entry.shape != tuple(tensor.shape):
            raise AuditInputError(
                f"{path}: tensor {name!r} has shape {entry.shape}, the architecture needs {tuple(tensor.shape)}"
            )
        if entry.dtype not in FLOAT_CODES:
            raise AuditInputError(
                f"{path}: tensor {name!r} has dtype {entry.dtype}, not a float ({', '.join(FLOAT_CODES)})"
            )


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, read whole (at most :data:`MAX_CHECKPOINT_BYTES`)."""
    data = read_input(path, MAX_CHECKPOINT_BYTES, "a model file")
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # the library's own SafetensorError, and whatever a corrupt file raises
        raise AuditInputError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None


def _check_names(expected: dict, found: dict, path: Path) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise AuditInputError(
            f"{path}: tensors do not match the architecture (missing: {', '.join(missing[:4]) or 'none'}; "
            f"unexpected: {shown(', '.join(extra[:4])) if extra else 'none'}){_prefix_hint(found, expected)}"
        )


def load_state_into(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Strictly load ``tensors`` into ``model``; any missing, extra or misshapen tensor, or one of
    another kind of number than the model's (complex for float, float for an integer buffer), is an error."""
    expected = model.state_dict()
    _check_names(expected, tensors, path)
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise AuditInputError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, the architecture needs {tuple(expected[name].shape)}"
            )
        if tensor.is_complex() or tensor.is_floating_point() != expected[name].is_floating_point():
            raise AuditInputError(
                f"{path}: tensor {name!r} has dtype {tensor.dtype}, the model needs {expected[name].dtype}"
            )
        if not torch.isfinite(tensor).all():
            raise AuditInputError(f"{path}: tensor {name!r} contains NaN or inf")
    model.load_state_dict(tensors, strict=True)


def _prefix_hint(tensors: dict, expected: dict) -> str:
    """A suggestion when the names carry a prefix the module's do not (a LightningModule's ``model.``)."""
    for head in sorted({name.split(".", 1)[0] + "." for name in tensors if "." in name}):
        if set(expected) <= {name[len(head) :] for name in tensors if name.startswith(head)}:
            return f"; the file's names start with {shown(head)}: try --key-prefix {shown_text(head)}"
    return ""


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
