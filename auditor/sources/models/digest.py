"""The state-dict digest: which weights a certificate certified, whatever file or library they came from.

A file's sha256 identifies its bytes, not the weights a loader built from them (a factory may load
its own weights, a library may convert dtypes). The digest hashes the tensors themselves, in a
documented order (docs/formats.md#the-state-dict-digest), so that it does not depend on the
device, the memory layout or the order of the dict:

    sha256( b"vae-audit state-dict digest v1\\0" ‖ u64(n) ‖ for each name in sorted order:
            u64(len name) ‖ name (UTF-8) ‖ u64(len dtype) ‖ dtype (ASCII, e.g. "float32")
            ‖ u64(ndim) ‖ u64(dim)… ‖ u64(len data) ‖ data )

with every u64 unsigned 64-bit little-endian, names sorted by Unicode code point (which is the
order of their UTF-8 bytes), and data the elements in C order of the logical shape, each
little-endian.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Mapping

import torch

from ...errors import AuditInputError

SCHEME = "vae-audit-state-dict/1"
DOMAIN = b"vae-audit state-dict digest v1\x00"


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _little_endian_bytes(name: str, tensor: torch.Tensor) -> memoryview:
    """The tensor's elements in C order of its logical shape, each little-endian."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type == "meta":
        raise AuditInputError(
            f"weight {name!r} is a sparse, quantized or meta tensor: it has no plain values to digest"
        )
    t = tensor.detach().resolve_conj().resolve_neg().to("cpu").contiguous().reshape(-1)
    raw = t.view(torch.uint8)
    if sys.byteorder == "big" and t.element_size() > 1:
        raw = raw.reshape(-1, t.element_size()).flip(1).reshape(-1)
    return raw.numpy().data


def state_dict_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """The hex sha256 of named tensors in the scheme of this module's docstring."""
    digest = hashlib.sha256(DOMAIN)
    digest.update(_u64(len(tensors)))
    for name in sorted(tensors):
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            raise AuditInputError(f"weight {name!r} is a {type(tensor).__name__}, not a tensor")
        name_bytes = name.encode("utf-8")
        dtype = str(tensor.dtype).removeprefix("torch.").encode("ascii")
        data = _little_endian_bytes(name, tensor)
        digest.update(_u64(len(name_bytes)) + name_bytes + _u64(len(dtype)) + dtype)
        digest.update(_u64(tensor.dim()) + b"".join(_u64(int(size)) for size in tensor.shape))
        digest.update(_u64(len(data)))
        digest.update(data)
    return digest.hexdigest()


def weights_digest(tensors: Mapping[str, torch.Tensor], covers: str) -> dict:
    """The certificate's ``model.weights_digest`` entry; ``covers`` says which tensors, in words."""
    return {"scheme": SCHEME, "tensors": covers, "count": len(tensors), "sha256": state_dict_digest(tensors)}
