"""Issue 12, the parsers: every hostile input of the independent set, one test per kind.

Each is refused as an :class:`AuditInputError` (exit 2, one line) — never another exception, a
crash, a hang or an allocation the file did not pay for. Where the old behaviour was a crash, a
hang or gigabytes of memory, the test runs the real CLI in a child process with a timeout and an
address-space cap (:class:`hostile_fixtures.LimitedCli`), so that a regression fails the test
instead of the test run.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.audit.pipeline import run_audit
from auditor.audit.request import AuditRequest
from auditor.audit.verify import recorded_request
from auditor.certificate.check import REQUEST_TYPES, SIZE, STRINGS, check_certificate
from auditor.errors import AuditInputError
from auditor.nets.registry import MAX_PARAMETERS, build_model
from auditor.reports.markdown import render_markdown
from auditor.sources.arrays import open_array
from auditor.sources.checkpoint import load_checkpoint
from auditor.sources.datasets.registry import open_dataset
from auditor.sources.teachers.files import load_teacher

from .certify_fixtures import ARCH, write_model
from .hostile_fixtures import (
    MEMO_BOMB,
    SEGV_BATCH,
    key_paths,
    npz_bomb,
    npz_claiming,
    one_error_line,
    python2_batch,
    reference_bomb,
    replaced,
    safetensors_with,
)
from .report_fixtures import run_cli, write_certificate
from .test_data import input_error as refused  # the one-line message of the AuditInputError a call raises
from .test_teacher_load import valid_dict

# ---------------------------------------------------------------- safetensors headers and metadata


@pytest.mark.parametrize(
    "metadata",
    [["vae_audit.format", "1"], {"vae_audit.format": 1}, {"vae_audit.format": ["1"]}, "1", {"x": None}],
)
def test_safetensors_metadata_must_map_strings_to_strings(tmp_path, metadata):
    header = {"__metadata__": metadata, "x": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}
    path = safetensors_with(tmp_path / "m.safetensors", header, bytes(4))
    assert "__metadata__ must map strings to strings" in refused(load_checkpoint, path)
    assert "__metadata__" in refused(open_array, path, "x")


@pytest.mark.parametrize(
    "entry",
    [
        [],
        "x",
        {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": {"a": 1}, "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0, 4.0]},
        {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1] * 33, "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [10**60, 10**60], "data_offsets": [0, 4]},
    ],
)
def test_safetensors_tensor_entries_of_the_wrong_types(tmp_path, entry):
    path = safetensors_with(tmp_path / "x.safetensors", {"x": entry}, bytes(4))
    assert "not a safetensors file" in refused(open_array, path, "x")


@pytest.mark.parametrize(
    "key, value",
    [
        ("vae_audit.architecture", '{"name": ["mlp"]}'),
        ("vae_audit.architecture", "[" * 100_000 + "]" * 100_000),
        ("vae_audit.architecture", '{"name": "mlp", "name": "conv"}'),
        ("vae_audit.architecture", '{"name": "mlp", "latent_dim": ' + "9" * 5000 + "}"),
        ("vae_audit.witness", '{"num_classes": 3, "beta": 1e999, "offset": 0}'),
        ("vae_audit.witness", '{"num_classes": 3, "beta": 2, "offset": true}'),
        ("vae_audit.witness", '{"num_classes": 3.0, "beta": 2, "offset": 0}'),
        ("vae_audit.training", "NaN"),
    ],
)
def test_checkpoint_metadata_json_of_the_wrong_kind(tmp_path, key, value):
    metadata = {
        "vae_audit.format": "1",
        "vae_audit.architecture": json.dumps(ARCH),
        "vae_audit.witness": json.dumps({"num_classes": 3, "beta": 2.0, "offset": 0}),
        key: value,
    }
    refused(load_checkpoint, write_model(tmp_path / "m.safetensors", metadata=metadata))


# ---------------------------------------------------------------- architectures


@pytest.mark.parametrize(
    "change",
    [
        {"name": ["mlp"]},
        {"name": {"mlp": 1}},
        {"activation": ["relu"]},
        {"activation": {"relu": 1}},
        {"likelihood": ["gaussian"]},
        {"hidden": "8"},
        {"hidden": [8.0]},
        {"hidden": [True]},
        {"hidden": [8] * 65},
        {"hidden": [2**31]},
        {"input_shape": [[64]]},
        {"input_shape": []},
        {"latent_dim": "4"},
        {"latent_dim": None},
        {"latent_dim": 0},
    ],
)
def test_every_architecture_field_is_type_checked(tmp_path, change):
    arch = {**ARCH, **change}
    refused(build_model, arch)
    metadata = {
        "vae_audit.format": "1",
        "vae_audit.architecture": json.dumps(arch),
        "vae_audit.witness": json.dumps({"num_classes": 3, "beta": 2.0, "offset": 0}),
    }
    refused(load_checkpoint, write_model(tmp_path / "m.safetensors", metadata=metadata))


@pytest.mark.parametrize(
    "arch",
    [
        {"name": "conv", "input_shape": [3, 8, 8], "channels": ["4"], "latent_dim": 2},
        {"name": "conv", "input_shape": [3, 8, 8], "channels": [4], "latent_dim": 2, "activation": [1]},
        {"name": "lidvae", "input_shape": [8], "hidden": [4], "latent_dim": 2, "icnn_hidden": [[4]]},
        {"name": "lidvae", "input_shape": [8], "hidden": [4], "latent_dim": 2, "convexity": 10**400},
        {"name": "lidvae", "input_shape": [8], "hidden": [4], "latent_dim": 2, "singular_values": [1, 10**400]},
        {"name": "const-var", "input_shape": [8], "hidden": [4], "latent_dim": 2, "posterior_variance": ["shared"]},
    ],
)
def test_other_architectures_type_check_their_fields(arch):
    refused(build_model, arch)


def test_an_architecture_over_the_parameter_budget_is_refused_before_it_is_built(limited_cli, tmp_path):
    # A hidden width of 10^8 is 25.6 GB of float32; the tensors in the file are a few bytes.
    arch = {**ARCH, "hidden": [10**8]}
    metadata = {
        "vae_audit.format": "1",
        "vae_audit.architecture": json.dumps(arch),
        "vae_audit.witness": json.dumps({"num_classes": 3, "beta": 2.0, "offset": 0}),
    }
    path = write_model(tmp_path / "wide.safetensors", tensors={"w": torch.zeros(1)}, metadata=metadata)
    assert f"more than the limit of {MAX_PARAMETERS}" in refused(build_model, arch)
    np.save(tmp_path / "x.npy", np.zeros((6, 64), np.float32))
    args = ["certify", "--model", path, "--data", tmp_path / "x.npy", "--teacher-probs", _probs(tmp_path, 3)]
    result = limited_cli.run([*args, "--out", tmp_path / "r"], 256)
    assert result.returncode == 2 and "parameters, more than the limit" in one_error_line(result)


def test_checkpoint_tensors_must_be_the_architectures_own_floats(tmp_path):
    from .certify_fixtures import mlp_tensors

    tensors = mlp_tensors()
    wide = {**tensors, "encoder.0.weight": torch.zeros(9, 64)}
    assert "needs (8, 64)" in refused(load_checkpoint, write_model(tmp_path / "a.safetensors", tensors=wide))
    ints = {**tensors, "encoder.0.bias": torch.zeros(8, dtype=torch.int64)}
    assert "not a float" in refused(load_checkpoint, write_model(tmp_path / "b.safetensors", tensors=ints))
    extra = {**tensors, "\x1b[31mextra": torch.zeros(1)}
    message = refused(load_checkpoint, write_model(tmp_path / "c.safetensors", tensors=extra))
    assert "\x1b" not in message and "\\x1b" in message


# ---------------------------------------------------------------- arrays of dtypes torch has no use for


def _probs(folder: Path, k: int, n: int = 6) -> Path:
    path = folder / f"probs{k}.npy"
    np.save(path, np.random.default_rng(k).dirichlet(np.ones(k), size=n))
    return path


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 3), np.longdouble),
        np.zeros((4, 3), np.complex64),
        np.zeros((4, 3), np.complex128),
        np.zeros((4, 3), "datetime64[s]"),
        np.zeros((4, 3), "timedelta64[ms]"),
        np.zeros((4, 3), "V8"),
        np.zeros((4, 3), [("a", "<f4"), ("b", "<f4")]),
        np.zeros((4, 3), "U2"),
        np.zeros((4, 3), "S2"),
        np.array([[None] * 3] * 4, dtype=object),
    ],
    ids=lambda array: str(array.dtype),
)
@pytest.mark.parametrize("layout", ["npy", "npz", "npz-compressed"])
def test_arrays_of_dtypes_that_are_not_plain_numbers_are_refused(tmp_path, array, layout):
    if layout == "npy":
        path = tmp_path / "a.npy"
        np.save(path, array, allow_pickle=True)
    else:
        path = tmp_path / "a.npz"
        (np.savez_compressed if layout == "npz-compressed" else np.savez)(path, mu=array, allow_pickle=True)
    message = refused(open_array, path, "mu")
    assert "plain numbers" in message or "header" in message
    for role in ("--latents", "--teacher-probs"):
        code = run_cli(["certify", role, str(path), "--beta", "1", "--out", str(tmp_path / "r"), "--quiet"])
        assert code == 2


@pytest.mark.parametrize("code", ["BF16", "F8_E4M3", "C64", "U16", "U64"])
def test_safetensors_dtypes_without_a_numpy_reader_are_refused(tmp_path, code):
    header = {"mu": {"dtype": code, "shape": [2, 2], "data_offsets": [0, 32]}}
    path = safetensors_with(tmp_path / "l.safetensors", header, bytes(32))
    assert "dtype" in refused(open_array, path, "mu")


def test_byte_swapped_arrays_still_work(tmp_path):
    mu = np.arange(12, dtype=">f8").reshape(4, 3)
    np.save(tmp_path / "mu.npy", mu)
    np.savez(tmp_path / "mu.npz", mu=mu)
    for path in (tmp_path / "mu.npy", tmp_path / "mu.npz"):
        assert np.array_equal(open_array(path, "mu").read(0, 4), mu)


def test_a_zip_needing_a_newer_extractor_is_refused(tmp_path):
    # "version needed to extract" 10.9 in the central directory: zipfile raises NotImplementedError
    path = tmp_path / "mu.npz"
    np.savez(path, mu=np.zeros((4, 3)))
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    raw[central + 6 : central + 8] = (109).to_bytes(2, "little")
    path.write_bytes(bytes(raw))
    assert "not a readable zip file" in refused(open_array, path, "mu")
    assert run_cli(["certify", "--latents", str(path), "--beta", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 2


# ---------------------------------------------------------------- teacher.pt tensors


def _teacher_file(path: Path, **change) -> Path:
    torch.save({**valid_dict(), **change}, path)
    return path


def _sparse_out_of_bounds() -> torch.Tensor:
    indices = torch.tensor([[0, 10**9]])
    return torch.sparse_coo_tensor(indices, torch.tensor([1.0, 2.0], dtype=torch.float64), (6,), check_invariants=False)


def _sparse_csr() -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Sparse CSR tensor support is in beta state"
        return torch.eye(3, 6, dtype=torch.float64).to_sparse_csr()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pca_mean": _sparse_out_of_bounds()}, "sparse"),
        ({"pca_components": _sparse_csr()}, "sparse_csr"),
        ({"pca_mean": None}, "must be a tensor"),
        ({"pca_mean": torch.empty(6, dtype=torch.float64, device="meta")}, "meta device"),
        ({"pca_mean": torch.zeros(6, dtype=torch.complex128)}, "complex"),
        ({"pca_mean": torch.zeros(6, dtype=torch.int64)}, "int64"),
        ({"pca_mean": torch.zeros(6, dtype=torch.bool)}, "bool"),
        ({"means": torch.full((4, 3), float("inf"), dtype=torch.float64)}, "NaN or inf"),
        ({"pca_mean": torch.zeros(1, dtype=torch.float64).expand(6)}, "view of 8 bytes"),
        ({"pca_mean": torch.zeros(12, dtype=torch.float64)[::2]}, "view of 96 bytes"),
        ({"pca_mean": torch.zeros(7, dtype=torch.float64)[1:]}, "view of 56 bytes"),
        ({"means": torch.zeros(4, dtype=torch.float64)}, "inconsistent teacher shapes"),
        ({"means": torch.zeros((), dtype=torch.float64)}, "inconsistent teacher shapes"),
        ({"log_weights": torch.zeros(4, 1, dtype=torch.float64)}, "inconsistent teacher shapes"),
        ({"temperature": 10**400}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": torch.tensor(2.0, dtype=torch.complex64)}, "complex"),
        ({"format": [[[]]] * 3}, "not a vae-audit teacher"),
    ],
)
def test_teacher_tensors_are_checked_before_any_operation(tmp_path, change, message):
    assert message in refused(load_teacher, _teacher_file(tmp_path / "t.pt", **change))


def test_a_transposed_dense_teacher_tensor_is_accepted(tmp_path):
    components = valid_dict()["pca_components"]
    teacher = load_teacher(_teacher_file(tmp_path / "t.pt", pca_components=components.T.contiguous().T))
    assert torch.equal(teacher.pca_components, components)


def test_a_stride_0_teacher_is_refused_without_materialising_it(limited_cli, tmp_path):
    # 2.8 kB on disk, 9 GB once .to(float64) and isfinite have run over its 4·10^8 columns.
    wide = 4 * 10**8
    path = _teacher_file(
        tmp_path / "t.pt",
        pca_mean=torch.zeros(1, dtype=torch.float64).expand(wide),
        pca_components=torch.zeros(1, 1, dtype=torch.float64).expand(2, wide),
        means=torch.zeros(4, 2, dtype=torch.float64),
        variances=torch.ones(4, 2, dtype=torch.float64),
    )
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    args = ["certify", "--latents", _latents(tmp_path), "--teacher", path, "--data", tmp_path / "x.npy", "--beta", "1"]
    result = limited_cli.run([*args, "--out", tmp_path / "r"], 256)
    assert result.returncode == 2 and "view of 8 bytes of storage" in one_error_line(result)


@pytest.mark.parametrize("deflate", [True, False])
def test_teacher_files_are_zips_of_stored_records(tmp_path, deflate):
    good = _teacher_file(tmp_path / "good.pt")
    if deflate:  # torch.load would inflate every record whole: 3 MB can claim 3 GB
        import zipfile

        with zipfile.ZipFile(good) as source, zipfile.ZipFile(tmp_path / "t.pt", "w", zipfile.ZIP_DEFLATED) as out:
            for info in source.infolist():
                out.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
        assert "is compressed" in refused(load_teacher, tmp_path / "t.pt")
    else:  # the legacy format: torch allocates each storage at the size its pickle claims
        torch.save(valid_dict(), tmp_path / "t.pt", _use_new_zipfile_serialization=False)
        assert "zip format" in refused(load_teacher, tmp_path / "t.pt")


def _latents(folder: Path, n: int = 2, d: int = 4) -> Path:
    path = folder / "mu.npy"
    np.save(path, np.zeros((n, d), np.float32))
    return path


# ---------------------------------------------------------------- certificates


WRONG_VALUES = [[], {}, "x", 1.5, True, None, 7, [[1]], {"a": "b"}]


def test_the_request_types_are_the_audit_requests_own():
    """check.py cannot import AuditRequest (a layer above it), so its table is compared here."""
    import types
    import typing
    from dataclasses import fields

    json_kind = {Path: str, type(None): None, tuple[str, ...]: STRINGS, tuple[int, int]: SIZE}
    for field in fields(AuditRequest):
        hint = typing.get_type_hints(AuditRequest)[field.name]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        assert set(REQUEST_TYPES[field.name]) == {json_kind.get(option, option) for option in options}, field.name
    assert set(REQUEST_TYPES) == {field.name for field in fields(AuditRequest)}


@pytest.mark.parametrize("field", sorted(REQUEST_TYPES))
def test_every_request_field_of_the_wrong_type_is_refused(audited, field):
    _, cert = audited
    for value in WRONG_VALUES:
        kinds = [float, int] if float in REQUEST_TYPES[field] else []
        kinds += [k for k in REQUEST_TYPES[field] if k is not float]
        if any(value is None if k is None else type(value) is k or (k is float and type(value) is int) for k in kinds):
            continue  # a value of a right type
        if value == [] and STRINGS in kinds:
            continue  # an empty list of strings
        edited = copy.deepcopy(cert)
        edited["request"][field] = value
        assert f"request.{field}" in refused(check_certificate, edited)
        # audit verify --recompute checks each field itself before it builds the request.
        assert f"request.{field}" in refused(recorded_request, edited, None, True)


def test_a_wrong_type_anywhere_in_a_certificate_is_refused_or_harmless(audited):
    """Every key and item of a real audited, replaced by values of other types: the check
    refuses it, or every text renderer and audit verify's reading of it still work."""
    from auditor.audit.verify import input_status
    from auditor.reports.junit import render_junit
    from auditor.reports.rows import summary_rows

    folder, cert = audited
    accepted = 0
    for path in list(key_paths(cert))[1:]:
        for value in WRONG_VALUES:
            edited = replaced(cert, path, value)
            try:
                check_certificate(edited)
            except AuditInputError as exc:
                assert "\n" not in str(exc)
                continue
            accepted += 1
            render_markdown(edited)
            render_junit(edited)
            summary_rows(edited)
            for record in edited["inputs"]:
                input_status(record, folder)
            with contextlib.suppress(AuditInputError):
                recorded_request(edited, folder, trust_code=False)
    assert accepted  # free-form entries (model provenance, settings) may hold anything


@pytest.mark.parametrize("command", ["verify", "report"])
def test_a_json_nesting_bomb_certificate_is_refused(tmp_path, command, capsys):
    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 500 + "1" + "}" * 500):
        path = tmp_path / "certificate.json"
        path.write_text(text)
        assert run_cli([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "nested more than" in err and len(err.strip().splitlines()) == 1


def test_a_certificate_with_a_key_given_twice_is_refused(audited, tmp_path, capsys):
    _, cert = audited
    text = json.dumps(cert).replace('"verdict": "certified"', '"verdict": "not_certified", "verdict": "certified"')
    (tmp_path / "c.json").write_text(text)
    assert run_cli(["verify", str(tmp_path / "c.json")]) == 2
    assert "is given twice" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "verify", "compare"])
@pytest.mark.parametrize("kind", ["/dev/zero", "FIFO"])
def test_a_certificate_that_is_not_a_regular_file_is_refused(limited_cli, tmp_path, command, kind):
    """/dev/zero never ends; a FIFO with no writer would block the reader forever."""
    path = Path(kind)
    if kind == "FIFO":
        path = tmp_path / "certificate.json"
        os.mkfifo(path)
    args = [command, path, path] if command == "compare" else [command, path]
    result = limited_cli.run(args, 512, 60)
    assert result.returncode == 2
    assert "not a regular file" in one_error_line(result)


# ---------------------------------------------------------------- CIFAR python batches


def _cifar_folder(folder: Path) -> Path:
    from .data_fixtures import write_cifar10_python

    write_cifar10_python(folder, np.random.default_rng(0))
    return folder


def test_the_crafted_cifar_batch_kills_the_plain_unpickler(tmp_path):
    """The reproduction is live here: numpy's own reconstruction of it crashes the interpreter."""
    (tmp_path / "batch").write_bytes(SEGV_BATCH)
    code = f"import pickle; pickle.loads(open({str(tmp_path / 'batch')!r}, 'rb').read(), encoding='bytes')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode < 0


def test_a_crafted_cifar_batch_cannot_crash_the_interpreter(limited_cli, tmp_path):
    folder = _cifar_folder(tmp_path / "cifar-10-batches-py")
    (folder / "data_batch_1").write_bytes(SEGV_BATCH)
    args = ["certify", "--data", folder, "--latents", _latents(tmp_path, 13), "--beta", "1"]
    args += ["--teacher-probs", _probs(tmp_path, 3, 13), "--out", tmp_path / "r"]
    result = limited_cli.run(args, 256)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "only uint8 arrays are accepted" in one_error_line(result)


def test_verify_recompute_on_a_strangers_certificate_cannot_crash(limited_cli, tmp_path):
    folder = _cifar_folder(tmp_path / "cifar-10-batches-py")
    args = ["--data", folder, "--latents", _latents(tmp_path, 13), "--teacher-probs", _probs(tmp_path, 3, 13)]
    assert run_cli(["certify", *map(str, args), "--beta", "1", "--out", str(tmp_path / "r"), "--quiet"]) in (0, 1)
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    (folder / "data_batch_1").write_bytes(SEGV_BATCH)
    for record in cert["inputs"]:  # the stranger's certificate names the crafted file with its own digest
        if record["path"].endswith("data_batch_1"):
            record["sha256"] = hashlib.sha256(SEGV_BATCH).hexdigest()
    write_certificate(tmp_path / "stranger.json", cert)
    result = limited_cli.run(["verify", tmp_path / "stranger.json", "--recompute"], 256)
    assert result.returncode == 2 and "not a readable CIFAR python batch" in one_error_line(result)


@pytest.mark.parametrize(
    "payload, message",
    [
        (MEMO_BOMB, "memo index"),  # 9 bytes; CPython's unpickler would take 4 GiB for its memo
        (reference_bomb(600), "'labels' must be 0 integer labels"),  # 3.7 kB: 2·10^8 labels once expanded
        (reference_bomb(2000), "opcodes"),  # 12 kB: 8·10^9 labels; more opcodes than 12 kB of CIFAR has
        (b"\x80\x02" + b"]" * 10_000 + b".", "opcodes"),  # an object per byte
        (b"\x80\x02\x8e" + (2**62).to_bytes(8, "little") + b".", "bytes8"),  # BINBYTES8 claiming 4 EiB
        (b"\x80\x05\x95" + (2**40).to_bytes(8, "little") + b"}.", "truncated"),  # a FRAME of 1 TiB
        (b"(dp0\n.", "protocol 2 or later"),
    ],
)
def test_cifar_pickles_that_allocate_from_a_claim_are_refused(limited_cli, tmp_path, payload, message):
    folder = _cifar_folder(tmp_path / "c")
    (folder / "test_batch").write_bytes(payload)
    result = limited_cli.run(
        ["certify", "--data", folder, "--split", "test", "--latents", _latents(tmp_path, 3), "--beta", "1",
         "--teacher-probs", _probs(tmp_path, 3, 3), "--out", tmp_path / "r"],
        256,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in one_error_line(result)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_from_every_protocol_and_numpy_read_back(tmp_path, protocol):
    from .data_fixtures import write_cifar10_python

    folder = tmp_path / "c"
    written = write_cifar10_python(folder, np.random.default_rng(protocol), protocol=protocol)
    data = open_dataset(str(folder), "test")
    images, labels = written["test_batch"]
    assert np.array_equal(data.read(0, 3), images) and data.labels().tolist() == list(labels)


def test_a_python2_cifar_batch_reads_back(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    folder = _cifar_folder(tmp_path / "c")
    (folder / "test_batch").write_bytes(python2_batch(images, [3, 1, 4, 1]))
    data = open_dataset(str(folder), "test")
    assert np.array_equal(data.read(0, 4), images) and data.labels().tolist() == [3, 1, 4, 1]


# ---------------------------------------------------------------- sizes claimed by headers


def test_an_npz_member_claiming_1e13_elements_is_refused_before_allocating(limited_cli, tmp_path):
    path = npz_claiming(tmp_path / "mu.npz", "mu", (10**13, 1))
    assert "claims (10000000000000, 1)" in refused(open_array, path, "mu")
    result = limited_cli.run(["certify", "--latents", path, "--teacher-probs", _probs(tmp_path, 3, 2), "--beta", "1"])
    assert result.returncode == 2 and "holds 8 bytes of data" in one_error_line(result)


def test_a_zip_bomb_over_the_inflation_budget_is_refused_unread(limited_cli, tmp_path):
    # The entry honestly declares 1.6 GB: refused from the declared size, nothing inflated.
    path = npz_bomb(tmp_path / "probs.npz", "probs", (2 * 10**8, 1), zeros=0, declared_data=16 * 10**8)
    result = limited_cli.run(["certify", "--latents", _latents(tmp_path), "--teacher-probs", path, "--beta", "1"])
    assert result.returncode == 2 and "more than the 1073741824-byte limit" in one_error_line(result)


def test_a_zip_bomb_that_lies_about_its_size_is_cut_at_the_declared_size(limited_cli, tmp_path):
    # 400 MB of zeros in 0.4 MB whose entry declares 800 bytes: inflation stops at the 801st.
    honest = npz_bomb(tmp_path / "honest.npz", "probs", (100, 1), zeros=800)
    assert np.array_equal(open_array(honest, "probs").read(0, 100), np.zeros((100, 1)))
    lying = npz_bomb(tmp_path / "lying.npz", "probs", (100, 1), zeros=4 * 10**8, declared_data=800)
    assert "inflates to more than its declared size" in refused(open_array, lying, "probs")
    result = limited_cli.run(
        ["certify", "--latents", _latents(tmp_path, 100), "--teacher-probs", lying, "--beta", "1"], 256
    )
    assert result.returncode == 2 and "inflates to more than its declared size" in one_error_line(result)


def test_a_gzipped_idx_claiming_2_to_the_31_images_is_refused_unread(tmp_path):
    import gzip
    import struct

    from .data_fixtures import write_mnist

    folder = tmp_path / "mnist"
    write_mnist(folder, np.random.default_rng(0))
    header = struct.pack(">IIII", 0x803, 2**31, 28, 28)
    (folder / "t10k-images-idx3-ubyte").unlink(missing_ok=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(1 << 20)))
    message = refused(open_dataset, str(folder), "test")
    assert "more than the 1073741824-byte limit" in message


def test_a_probability_file_with_100000_classes_is_refused_with_the_budget(limited_cli, tmp_path):
    np.save(tmp_path / "probs.npy", np.full((1, 100_000), 1e-5, np.float32))
    np.save(tmp_path / "mu.npy", np.zeros((1, 100_000), np.float32))
    args = ["certify", "--latents", tmp_path / "mu.npy", "--teacher-probs", tmp_path / "probs.npy", "--beta", "1"]
    result = limited_cli.run([*args, "--out", tmp_path / "r"], 512)
    assert result.returncode == 2 and "GiB budget" in one_error_line(result)


# ---------------------------------------------------------------- digests of the bytes audited


def _race_inputs(folder: Path, n: int = 600) -> AuditRequest:
    from .report_fixtures import audit_arrays

    mu, p = audit_arrays(n, aligned=False)
    np.save(folder / "mu.npy", mu.astype(np.float32))
    np.save(folder / "probs.npy", p.astype(np.float32))
    files = {"latents": folder / "mu.npy", "teacher_probs": folder / "probs.npy"}
    return AuditRequest(**files, beta=2.0, batch_size=50, device="cpu", model_diagnostics=False)


def _rewrite_in_place(path: Path, restore_mtime: bool) -> None:
    before = os.stat(path)
    with open(path, "r+b") as handle:  # same inode, same size: only the bytes (valid floats) change
        handle.seek(before.st_size - 400)
        handle.write(np.full(100, 3.0, np.float32).tobytes())
    if restore_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)


@pytest.mark.parametrize("change", ["in place", "in place, mtime restored", "renamed over"])
def test_a_file_changed_during_the_pass_is_refused(tmp_path, change):
    request = _race_inputs(tmp_path)
    done = []

    def progress(rows: int) -> None:
        done.append(rows)
        if len(done) == 2:  # the pass has begun: hashing and reading are under way
            if change == "renamed over":
                np.save(tmp_path / "other.npy", np.ones((600, 5), np.float32))
                os.replace(tmp_path / "other.npy", tmp_path / "mu.npy")
            else:
                _rewrite_in_place(tmp_path / "mu.npy", restore_mtime="restored" in change)

    message = refused(run_audit, request, progress=progress)
    assert "mu.npy: changed during the audit" in message and len(done) > 2


def test_an_unchanged_audit_still_passes_and_hashes_what_it_read(tmp_path):
    request = _race_inputs(tmp_path)
    result = run_audit(request)
    digests = {Path(r.path).name: r.sha256 for r in result.inputs}
    assert digests["mu.npy"] == hashlib.sha256((tmp_path / "mu.npy").read_bytes()).hexdigest()


# ---------------------------------------------------------------- special files


def _certificate_naming(audited, tmp_path: Path, path: str, role: str | None = None) -> Path:
    _, cert = audited
    edited = copy.deepcopy(cert)
    edited["inputs"][0]["path"] = path
    if role is not None:
        edited["inputs"][0]["role"] = role
    return write_certificate(tmp_path / "certificate.json", edited)


@pytest.mark.parametrize(
    "path, status",
    [
        ("/proc/self/pagemap", "not a regular file"),  # claims 0 bytes, reads on for hundreds of GB: it hung
        ("/proc/self/mem", "unreadable"),  # EIO at offset 0: it was a traceback
        ("/proc/self/status", "not a regular file"),
        ("/dev/zero", "not a regular file"),
        ("FIFO", "not a regular file"),
        ("FIFO in an image folder", "differs"),  # a data folder is an image folder: its manifest skips the FIFO
        ("folder as latents", "not a regular file"),  # only data may be a folder
        ("nul\x00byte", "missing"),
    ],
)
def test_verify_hashes_only_regular_files(limited_cli, audited, tmp_path, path, status):
    if path == "FIFO":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    if path == "FIFO in an image folder":
        (tmp_path / "images" / "cats").mkdir(parents=True)
        os.mkfifo(tmp_path / "images" / "cats" / "a.png")
        path = str(tmp_path / "images")
    if path == "folder as latents":
        path = str(tmp_path)
    role = "data" if path.endswith("images") else None
    result = limited_cli.run(["verify", _certificate_naming(audited, tmp_path, path, role)], 512, 60)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.splitlines()[1].startswith(status)  # after the line saying where paths start


@pytest.mark.parametrize("kind", ["fifo", "folder", "pagemap"])
def test_certify_opens_only_regular_files(limited_cli, tmp_path, kind):
    latents = tmp_path / "mu.npy"
    if kind == "fifo":
        os.mkfifo(latents)
    elif kind == "folder":
        latents.mkdir()
    else:
        latents.symlink_to("/proc/self/pagemap")
    args = ["certify", "--latents", latents, "--teacher-probs", _probs(tmp_path, 3, 2), "--beta", "1"]
    result = limited_cli.run([*args, "--out", tmp_path / "r"], 512, 60)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "not a regular file" in line or "truncated" in line


def test_a_report_never_reads_a_special_file_named_by_the_certificate(limited_cli, audited, tmp_path):
    _, cert = audited
    # The training log html reports look for beside the model: a "regular" file of size 0 that reads on.
    (tmp_path / "model.csv").symlink_to("/proc/self/pagemap")
    edited = {**copy.deepcopy(cert), "model": {"path": str(tmp_path / "model.safetensors")}}
    path = write_certificate(tmp_path / "certificate.json", edited)
    result = limited_cli.run(["report", path, "--format", "html", "--out", tmp_path / "out"], 512, 120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "longer than its size" in (tmp_path / "out" / "certificate.html").read_text()


@pytest.mark.parametrize("reader", ["witness", "model config"])
def test_small_json_files_from_main_are_read_as_checked_inputs(tmp_path, reader):
    """witness.json and a model's config.json: a nesting bomb (it was a RecursionError for the
    witness) and a /proc file that claims 0 bytes and reads on (it hung both)."""
    from auditor.sources.models.config_files import read_config
    from auditor.sources.witness_file import load_witness

    read = load_witness if reader == "witness" else read_config
    (tmp_path / "bomb.json").write_text("[" * 30_000 + "]" * 30_000)
    (tmp_path / "endless.json").symlink_to("/proc/self/pagemap")
    assert "levels deep" in refused(read, tmp_path / "bomb.json")
    assert "longer than its size" in refused(read, tmp_path / "endless.json")
