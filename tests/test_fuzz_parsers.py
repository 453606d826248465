"""Fuzzing every parser of a user's file: the right answer, or one AuditInputError line — nothing else.

Each test starts from valid files written by the reference writers (numpy, safetensors, pickle,
torch, ``audit certify``) and lets hypothesis mutate them — bytes flipped, inserted, deleted,
truncated, repeated — or build them from random JSON values. An accepted file must read back
exactly as the reference reader reads it; a refused one must be an :class:`AuditInputError` of
one line. No other exception, crash, hang or unbounded allocation.

The paths that reach C code that can crash (the unpickler under CIFAR batches; torch tensors
under teacher dicts) run inside a child interpreter with an address-space cap and a timeout
(:class:`hostile_fixtures.LimitedCli`), where a crash or a runaway allocation fails the test
instead of the run. Examples are bounded (``FUZZ_EXAMPLES``, default 30 per parser) so that the
suite stays fast; set it higher for a longer search.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file as load_safetensors
from safetensors.numpy import save as save_safetensors

from auditor.certificate.check import check_certificate, load_certificate
from auditor.errors import AuditInputError
from auditor.reports.junit import render_junit
from auditor.reports.markdown import render_markdown
from auditor.sources.arrays import open_array
from auditor.sources.checkpoint import load_checkpoint
from auditor.sources.datasets.mnist_idx import IDX_IMAGES_MAGIC, _read_idx

from .certify_fixtures import ARCH, write_model
from .hostile_fixtures import key_paths, python2_batch, replaced

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with one to four edits: a byte flipped or set, bytes inserted, deleted, repeated, or a cut."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(out) - 1)))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "repeat", "cut"]))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and out:
            out[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 16))]
        elif kind == "repeat":
            out[at:at] = out[at : at + draw(st.integers(1, 64))]
        else:
            del out[at:]
    return bytes(out)


def refused_in_one_line(error: AuditInputError) -> None:
    assert str(error) and "\n" not in str(error)


def read_or_refuse(suffix: str, data: bytes, read):
    """``read(path)`` of a new file holding ``data`` (hypothesis runs each test many times: no
    tmp_path), or None when it raises an AuditInputError — which must be one line."""
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as handle:
        handle.write(data)
    try:
        return read(Path(handle.name))
    except AuditInputError as error:
        refused_in_one_line(error)
        return None
    finally:
        Path(handle.name).unlink()


# ---------------------------------------------------------------- .npy, .npz and .safetensors arrays


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz(compressed: bool, **arrays) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


VALID_ARRAYS = [
    (".npy", _npy(np.arange(24, dtype="<f4").reshape(6, 4))),
    (".npy", _npy(np.asfortranarray(np.arange(12, dtype=">i8").reshape(3, 4)))),
    (".npz", _npz(False, mu=np.arange(10, dtype=np.float64).reshape(5, 2), y=np.arange(5))),
    (".npz", _npz(True, mu=np.arange(12, dtype=np.uint8).reshape(4, 3))),
    (".safetensors", save_safetensors({"mu": np.arange(8, dtype=np.float32).reshape(4, 2), "b": np.ones(3, np.int64)})),
]


def _reference_array(path: Path, name: str) -> np.ndarray | None:
    """What numpy / safetensors read from the same bytes, or None when they refuse too."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return archive[name]
        return load_safetensors(str(path))[name]
    except Exception:
        return None


@FUZZ
@given(st.data())
def test_array_files(data):
    suffix, valid = data.draw(st.sampled_from(VALID_ARRAYS))

    def read(path: Path):
        reader = open_array(path, "mu")
        return reader, reader.read(0, reader.shape[0] if reader.shape else 0), _reference_array(path, "mu")

    outcome = read_or_refuse(suffix, data.draw(mutated(valid)), read)
    if outcome is None:
        return
    reader, got, expected = outcome
    assert got.shape == tuple(reader.shape) and got.dtype.kind in "biuf"
    # Headers and zip directories are checked; data bytes are not (a flipped float is still a
    # float): an accepted file reads as its reference reader reads it, where that reader can.
    if expected is not None and expected.shape == got.shape:
        assert np.array_equal(got, expected, equal_nan=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(
    header=st.dictionaries(st.sampled_from(["mu", "__metadata__", "x"]), json_values, max_size=3),
    size=st.integers(0, 64),
)
def test_safetensors_headers_built_from_random_json(header, size):
    text = json.dumps(header).encode()
    reader = read_or_refuse(
        ".safetensors", struct.pack("<Q", len(text)) + text + bytes(size), lambda p: open_array(p, "mu")
    )
    if reader is not None:
        assert reader.read(0, reader.shape[0] if reader.shape else 0).shape == tuple(reader.shape)


# ---------------------------------------------------------------- MNIST IDX


def _idx(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", IDX_IMAGES_MAGIC, *images.shape) + images.tobytes()


VALID_IDX = _idx(np.arange(2 * 5 * 4, dtype=np.uint8).reshape(2, 5, 4))


@FUZZ
@given(st.data(), st.booleans())
def test_idx_files(data, gzipped):
    raw = data.draw(mutated(VALID_IDX))
    images = read_or_refuse(
        ".gz" if gzipped else "",
        gzip.compress(raw) if gzipped else raw,
        lambda p: np.array(_read_idx(p, IDX_IMAGES_MAGIC)),
    )
    if images is None:
        return
    # The format, from its definition: magic, three big-endian sizes, then exactly that many bytes.
    dims = struct.unpack(">3I", raw[4:16])
    assert struct.unpack(">I", raw[:4])[0] == IDX_IMAGES_MAGIC and len(raw) == 16 + int(np.prod(dims))
    assert np.array_equal(images, np.frombuffer(raw[16:], np.uint8).reshape(dims))


# ---------------------------------------------------------------- checkpoint metadata


@FUZZ
@given(
    key=st.sampled_from(["vae_audit.architecture", "vae_audit.witness", "vae_audit.training", "vae_audit.format"]),
    value=json_values,
    field=st.sampled_from(["name", "input_shape", "hidden", "latent_dim", "activation", "likelihood", None]),
)
def test_checkpoint_metadata(tmp_path_factory, key, value, field):
    metadata = {
        "vae_audit.format": "1",
        "vae_audit.architecture": json.dumps(ARCH),
        "vae_audit.witness": json.dumps({"num_classes": 3, "beta": 2.0, "offset": 0}),
    }
    if field is not None and key == "vae_audit.architecture":
        metadata[key] = json.dumps({**ARCH, field: value})
    else:
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    try:
        checkpoint = load_checkpoint(write_model(path, metadata=metadata))
    except AuditInputError as error:
        refused_in_one_line(error)
        return
    mu, _ = checkpoint.model.encode(torch.zeros(2, 64))
    assert mu.shape == (2, 4)


# ---------------------------------------------------------------- certificates


@FUZZ
@given(st.data(), json_values)
def test_certificate_values(audited, data, value):
    _, certificate = audited
    edited = replaced(certificate, data.draw(st.sampled_from(list(key_paths(certificate))[1:])), value)
    try:
        check_certificate(edited)
    except AuditInputError as error:
        refused_in_one_line(error)
        return
    render_markdown(edited)
    render_junit(edited)


@FUZZ
@given(st.data())
def test_certificate_text(audited, data):
    cert = read_or_refuse(".json", data.draw(mutated(json.dumps(audited[1]).encode())), load_certificate)
    if cert is None:
        return
    render_markdown(cert)
    render_junit(cert)


# ---------------------------------------------------------------- CIFAR pickles and teacher dicts, in a child


def _cifar_batches() -> list[bytes]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    batch = {"data": images.reshape(3, 3072), "labels": [1, 2, 3], "filenames": ["a", "b", "c"], "batch_label": "t"}
    as_bytes = {key.encode(): value for key, value in batch.items()}
    pickles = [pickle.dumps(batch, protocol=p) for p in (2, 3, 4, 5)] + [pickle.dumps(as_bytes, protocol=2)]
    return [*pickles, python2_batch(images, [1, 2, 3])]


def fuzz_cifar_batches() -> None:
    """Run in the child: mutated CIFAR batches read by our reader and, when it accepts, by pickle."""
    from auditor.sources.datasets.cifar_python import _open_cifar_pickle

    batches = _cifar_batches()

    @FUZZ
    @given(st.data())
    def check(data):
        raw = data.draw(mutated(data.draw(st.sampled_from(batches))))
        rows = read_or_refuse("", raw, lambda path: _open_cifar_pickle(path, "labels"))
        if rows is None:
            return
        # Accepted: the arguments are plain uint8 arrays, so the real unpickler (the oracle) is safe to run.
        reference = pickle.loads(raw, encoding="bytes")
        entries = {(k.decode() if isinstance(k, bytes) else k): v for k, v in reference.items()}
        count = rows.rows.shape[0]
        assert np.array_equal(rows.rows.read(0, count).reshape(count, 3072), entries["data"])
        assert rows.labels().tolist() == entries["labels"]

    check()


def test_cifar_batches_in_a_child(limited_cli):
    result = limited_cli.run(["python", "tests.test_fuzz_parsers:fuzz_cifar_batches"], 1024, 600)
    assert result.returncode == 0, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])


def _tensors():
    shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
    dtypes = st.sampled_from([torch.float64, torch.float32, torch.float16, torch.int64, torch.bool, torch.complex64])

    @st.composite
    def tensor(draw):
        shape = draw(shapes)
        value = torch.zeros(shape, dtype=draw(dtypes))
        kind = draw(st.sampled_from(["plain", "expanded", "strided", "meta", "sparse", "nan", "transposed"]))
        if kind == "expanded" and len(shape) >= 1:
            value = torch.zeros((1, *shape[1:]), dtype=value.dtype).expand(draw(st.integers(0, 10**9)), *shape[1:])
        elif kind == "strided" and value.numel():
            value = value.flatten()[:: draw(st.integers(1, 3))]
        elif kind == "meta":
            value = torch.empty(shape, dtype=value.dtype, device="meta")
        elif kind == "sparse" and len(shape) == 1:
            indices = torch.tensor([[draw(st.integers(0, 10**9))]])
            value = torch.sparse_coo_tensor(indices, torch.ones(1, dtype=value.dtype), shape, check_invariants=False)
        elif kind == "nan" and value.is_floating_point() and value.numel():
            value = value.flatten().clone()
            value[0] = float("nan")
        elif kind == "transposed" and len(shape) == 2:
            value = value.T.contiguous().T
        return value

    return tensor()


def fuzz_teacher_dicts() -> None:
    """Run in the child: teacher dicts with fields replaced by tensors of every kind torch.load returns."""
    from auditor.teachers.pca_gmm import teacher_from_dict

    from .test_teacher_load import valid_dict

    fields = ["pca_mean", "pca_components", "log_weights", "means", "variances", "temperature", "format"]

    @FUZZ
    @given(st.dictionaries(st.sampled_from(fields), _tensors() | json_values, min_size=1, max_size=3))
    def check(change):
        try:
            teacher = teacher_from_dict({**valid_dict(), **change})
        except AuditInputError as error:
            refused_in_one_line(error)
            return
        p = teacher(torch.rand(4, teacher.input_dim, dtype=torch.float64))
        assert p.shape == (4, teacher.num_classes)

    check()


def test_teacher_dicts_in_a_child(limited_cli):
    result = limited_cli.run(["python", "tests.test_fuzz_parsers:fuzz_teacher_dicts"], 1024, 600)
    assert result.returncode == 0, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
