"""The state-dict digest (docs/formats.md#the-state-dict-digest), checked against the documented byte
order written out here with hashlib and struct, and against a safetensors file's raw bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from auditor.errors import AuditInputError
from auditor.sources.models.digest import state_dict_digest

from .reference import digest_of_entries, safetensors_file_digest


def sample_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "b.weight": torch.randn(3, 4, generator=g),
        "a.bias": torch.randn(4, generator=g).to(torch.bfloat16),
        "c.scalar": torch.tensor(2.5, dtype=torch.float64),
        "d.mask": torch.tensor([True, False, True]),
        "e.count": torch.tensor([1, -2, 3], dtype=torch.int64),
        "f.empty": torch.zeros(0, 5),
        "ü.unicode": torch.ones(2, dtype=torch.float16),
    }


def test_golden_value_from_the_documented_bytes():
    state = {"w": torch.tensor([[1.0, -2.0], [0.5, 0.0]]), "b": torch.tensor([3], dtype=torch.int64)}
    expected = digest_of_entries(
        [
            ("w", "float32", [2, 2], struct.pack("<4f", 1.0, -2.0, 0.5, 0.0)),
            ("b", "int64", [1], struct.pack("<q", 3)),
        ]
    )
    assert state_dict_digest(state) == expected


def test_equals_the_digest_of_a_safetensors_files_bytes(tmp_path):
    state = sample_state()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    assert state_dict_digest(state) == safetensors_file_digest(tmp_path / "w.safetensors")


def test_independent_of_order_strides_and_layout():
    state = sample_state()
    reference = state_dict_digest(state)
    assert state_dict_digest(dict(reversed(list(state.items())))) == reference
    transposed = state["b.weight"].t().contiguous().t()
    assert not transposed.is_contiguous()
    assert state_dict_digest({**state, "b.weight": transposed}) == reference
    assert state_dict_digest({**state, "b.weight": torch.nn.Parameter(state["b.weight"])}) == reference
    big = torch.randn(2, 3, 4, 5)
    assert state_dict_digest({"x": big.to(memory_format=torch.channels_last)}) == state_dict_digest({"x": big})
    z = torch.randn(3, dtype=torch.complex64)
    assert state_dict_digest({"z": z.conj()}) == state_dict_digest({"z": z.conj().resolve_conj()})


@pytest.mark.parametrize("change", ["name", "dtype", "shape", "one bit", "negative zero", "one more tensor"])
def test_every_change_changes_it(change):
    w = torch.tensor([1.0, 0.0, 3.0])
    bits = w.clone().view(torch.int32)
    bits[2] ^= 1
    other = {
        "name": {"v": w},
        "dtype": {"w": w.double()},
        "shape": {"w": w.reshape(3, 1)},
        "one bit": {"w": bits.view(torch.float32)},
        "negative zero": {"w": torch.tensor([1.0, -0.0, 3.0])},
        "one more tensor": {"w": w, "u": torch.zeros(1)},
    }[change]
    assert state_dict_digest(other) != state_dict_digest({"w": w})


def test_big_values_digest_as_little_endian_c_order():
    x = np.arange(24, dtype=">f8").reshape(2, 3, 4)  # big-endian input: the digest hashes little-endian values
    raw = np.ascontiguousarray(x.astype("<f8")).tobytes()
    assert state_dict_digest({"x": torch.from_numpy(x.astype(np.float64))}) == digest_of_entries(
        [("x", "float64", [2, 3, 4], raw)]
    )


def test_refuses_what_has_no_plain_values():
    with pytest.raises(AuditInputError, match="meta"):
        state_dict_digest({"w": torch.empty(2, device="meta")})
    with pytest.raises(AuditInputError, match="sparse"):
        state_dict_digest({"w": torch.eye(2).to_sparse()})
    with pytest.raises(AuditInputError, match="not a tensor"):
        state_dict_digest({"w": 3})  # type: ignore[dict-item]
