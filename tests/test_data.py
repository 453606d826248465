"""Tests of auditor.sources.datasets.dataset: built-in digits, tensor files, CIFAR and MNIST folders, and every error."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from sklearn.datasets import load_digits

from auditor.errors import AuditInputError
from auditor.sources.arrays import FileRows
from auditor.sources.datasets.dataset import Dataset, to_unit_float
from auditor.sources.datasets.registry import DATASETS, open_dataset
from auditor.sources.hashing import InputRecord

try:  # pytest puts tests/ on sys.path unless tests/ is a package
    from data_fixtures import (
        idx_bytes,
        write_cifar10_binary,
        write_cifar10_python,
        write_cifar100_binary,
        write_cifar100_python,
        write_idx,
        write_mnist,
    )
except ImportError:
    from tests.data_fixtures import (
        idx_bytes,
        write_cifar10_binary,
        write_cifar10_python,
        write_cifar100_binary,
        write_cifar100_python,
        write_idx,
        write_mnist,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def input_error(call, *args, **kwargs) -> str:
    """The message of the AuditInputError raised by call(*args); it must be one line."""
    with pytest.raises(AuditInputError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def traced_peak_bytes(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- digits ------------------------------------------------------------------------------------

DIGITS = load_digits()
DIGITS_IS_TEST = np.arange(1797) % 5 == 0


def test_digits_is_documented_builtin():
    assert "digits" in DATASETS


def test_digits_all_matches_sklearn_divided_by_16():
    data = open_dataset("digits")
    assert isinstance(data, Dataset)
    assert data.split == "all"  # the default split
    assert data.spec == "digits"
    assert data.shape == (1797, 64) and data.num_samples == 1797 and data.sample_shape == (64,)
    assert data.dtype == np.float32
    rows = data.read(0, 1797)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, (DIGITS.data / 16).astype(np.float32))
    assert rows.max() == 1.0 and rows.min() == 0.0
    np.testing.assert_array_equal(data.labels(), DIGITS.target)


@pytest.mark.parametrize(
    "split, count, selected",
    [
        ("test", 360, DIGITS_IS_TEST),
        ("train", 1437, ~DIGITS_IS_TEST),
    ],
)
def test_digits_split_by_index_mod_5(split, count, selected):
    data = open_dataset("digits", split=split)
    assert data.shape == (count, 64) and data.split == split
    np.testing.assert_array_equal(data.read(0, count), DIGITS.data[selected] / 16)
    np.testing.assert_array_equal(data.labels(), DIGITS.target[selected])


def test_digits_train_and_test_partition_all():
    assert open_dataset("digits", "train").num_samples + open_dataset("digits", "test").num_samples == 1797
    np.testing.assert_array_equal(open_dataset("digits", "test").read(0, 1), DIGITS.data[:1] / 16)
    np.testing.assert_array_equal(open_dataset("digits", "train").read(0, 1), DIGITS.data[1:2] / 16)


def test_digits_input_record_hashes_the_raw_array():
    data = open_dataset("digits", split="test", role="teacher-data")
    expected = hashlib.sha256(np.ascontiguousarray(load_digits().data).tobytes()).hexdigest()
    assert data.inputs == [InputRecord("teacher-data", "builtin:digits", expected)]


def test_digits_limit_keeps_first_samples_of_split():
    data = open_dataset("digits", split="test", limit=7)
    assert data.shape == (7, 64)
    np.testing.assert_array_equal(data.read(0, 7), DIGITS.data[DIGITS_IS_TEST][:7] / 16)
    np.testing.assert_array_equal(data.labels(), DIGITS.target[DIGITS_IS_TEST][:7])


def test_read_returns_an_owned_copy_and_clips_stop():
    data = open_dataset("digits", limit=10)
    batch = data.read(8, 100)
    assert batch.shape == (2, 64)
    batch[:] = -1  # must not corrupt what later reads return
    assert data.read(8, 10).min() == 0.0
    assert data.read(10, 20).shape == (0, 64)
    with pytest.raises(ValueError):
        data.read(-1, 3)


# --- tensor files ------------------------------------------------------------------------------


def test_npy_file_keeps_uint8_and_records_sha256(tmp_path, rng):
    x = rng.integers(0, 256, size=(12, 1, 4, 4), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, x)
    data = open_dataset(str(path))
    assert data.shape == (12, 1, 4, 4) and data.dtype == np.uint8
    np.testing.assert_array_equal(data.read(3, 9), x[3:9])
    assert data.labels() is None
    assert data.inputs == [InputRecord("data", str(path), sha256_of(path))]


def test_npy_is_read_in_row_ranges_not_loaded(tmp_path, rng):
    x = rng.standard_normal((4096, 1024), dtype=np.float32)  # 16 MiB
    path = tmp_path / "big.npy"
    np.save(path, x)

    def open_and_read():
        data = open_dataset(str(path))
        return data, data.read(100, 110)

    (data, rows), peak = traced_peak_bytes(open_and_read)
    assert isinstance(data._rows, FileRows)  # read from the file on demand, not loaded
    assert type(rows) is np.ndarray and rows.shape == (10, 1024)
    np.testing.assert_array_equal(rows, x[100:110])
    assert peak < 4 * 2**20, f"opening and reading 10 rows allocated {peak} bytes"


def test_npz_with_labels(tmp_path, rng):
    x = rng.random((9, 5))
    y = rng.integers(0, 3, size=9)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    data = open_dataset(str(path))
    assert data.shape == (9, 5) and data.dtype == np.float64  # floats as stored
    np.testing.assert_array_equal(data.read(0, 9), x)
    np.testing.assert_array_equal(data.labels(), y)
    assert data.labels().dtype == np.int64


def test_safetensors_with_labels_and_limit(tmp_path, rng):
    x = rng.random((20, 3, 2, 2)).astype(np.float32)
    y = rng.integers(0, 10, size=20).astype(np.int32)
    path = tmp_path / "d.safetensors"
    save_file({"x": x, "y": y}, str(path))
    data = open_dataset(str(path), limit=6)
    assert data.shape == (6, 3, 2, 2) and data.dtype == np.float32
    np.testing.assert_array_equal(data.read(2, 5), x[2:5])
    np.testing.assert_array_equal(data.labels(), y[:6])
    assert data.inputs[0].sha256 == sha256_of(path)


def test_limit_larger_than_n_keeps_everything(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 2), np.float32))
    assert open_dataset(str(path), limit=1000).shape == (4, 2)
    assert open_dataset(str(path), limit=1).shape == (1, 2)


def test_explicit_split_all_is_accepted_for_files(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 2), np.float32))
    assert open_dataset(str(path), split="all").split == "all"


def test_missing_x_in_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((3, 2)))
    assert "'x'" in input_error(open_dataset, str(path))


def test_missing_x_in_safetensors(tmp_path):
    path = tmp_path / "d.safetensors"
    save_file({"images": np.zeros((3, 2), np.float32)}, str(path))
    assert "'x'" in input_error(open_dataset, str(path))


def test_one_dimensional_x_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(10, dtype=np.float32))
    assert "(N, D)" in input_error(open_dataset, str(path))


def test_scalar_x_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.float32(3.0))
    assert "shape ()" in input_error(open_dataset, str(path))


def test_non_numeric_x_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([["a", "b"], ["c", "d"]]))
    assert "non-numeric" in input_error(open_dataset, str(path))


def test_truncated_npy_data(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((100, 10), np.float32))
    path.write_bytes(path.read_bytes()[:-40])
    assert "truncated" in input_error(open_dataset, str(path))


def test_truncated_npy_header(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((100, 10), np.float32))
    path.write_bytes(path.read_bytes()[:30])
    assert "truncated" in input_error(open_dataset, str(path))


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "d.safetensors"
    save_file({"x": np.zeros((50, 10), np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    assert "truncated" in input_error(open_dataset, str(path))


def _safetensors_with_header(path, header: dict, data: bytes) -> None:
    import json
    import struct

    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize(
    "x_entry, message",
    [
        ({"dtype": "F32", "shape": [2, 3], "data_offsets": [0, "24"]}, "bad offsets"),
        ({"dtype": "F32", "shape": [2, 3], "data_offsets": [16, 8]}, "bad offsets"),
        ({"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 24]}, "shape and offsets disagree"),
        ({"dtype": "F32", "shape": [2, "3"], "data_offsets": [0, 24]}, "bad shape"),
    ],
)
def test_safetensors_with_inconsistent_entries(tmp_path, x_entry, message):
    path = tmp_path / "d.safetensors"
    _safetensors_with_header(path, {"x": x_entry}, bytes(24))
    assert message in input_error(open_dataset, str(path))


def test_npy_of_python_objects_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1, "a"], [None, 2.0]], dtype=object), allow_pickle=True)
    assert "Python objects" in input_error(open_dataset, str(path))


def test_empty_file_data_set(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((0, 4), np.float32))
    assert "no samples" in input_error(open_dataset, str(path))


def test_labels_of_wrong_shape(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((5, 2)), y=np.zeros((4,), np.int64))
    assert "'y'" in input_error(open_dataset, str(path))


def test_labels_that_are_not_integers(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((5, 2)), y=np.zeros((5,), np.float32))
    assert "integers" in input_error(open_dataset, str(path))


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1,2\n")
    assert "unsupported" in input_error(open_dataset, str(path))


# --- arguments ---------------------------------------------------------------------------------


def test_unknown_spec_lists_builtins(tmp_path):
    message = input_error(open_dataset, str(tmp_path / "nowhere"))
    assert "unknown data set" in message and "digits" in message


def test_bad_split_name():
    assert "train, test or all" in input_error(open_dataset, "digits", split="validation")


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_bad_limit(limit):
    assert "--limit" in input_error(open_dataset, "digits", limit=limit)


# --- CIFAR binary ------------------------------------------------------------------------------


def test_cifar10_binary_splits_values_labels_and_records(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-bin"
    written = write_cifar10_binary(folder, rng)
    train_names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    train_images = np.concatenate([written[n][0] for n in train_names])
    train_labels = np.concatenate([written[n][1] for n in train_names])
    test_images, test_labels = written["test_batch.bin"]

    train = open_dataset(str(folder), split="train")
    assert train.shape == (12, 3, 32, 32) and train.dtype == np.uint8
    np.testing.assert_array_equal(train.read(0, 12), train_images)
    np.testing.assert_array_equal(train.labels(), train_labels)
    assert [r.path for r in train.inputs] == [str(folder / n) for n in train_names]
    assert all(r.sha256 == sha256_of(r.path) and r.role == "data" for r in train.inputs)

    test = open_dataset(str(folder), split="test")
    assert test.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(test.read(0, 5), test_images)
    np.testing.assert_array_equal(test.labels(), test_labels)
    assert [r.path for r in test.inputs] == [str(folder / "test_batch.bin")]

    everything = open_dataset(str(folder))  # all = train then test
    assert everything.shape == (17, 3, 32, 32)
    np.testing.assert_array_equal(everything.read(0, 17), np.concatenate([train_images, test_images]))
    np.testing.assert_array_equal(everything.labels(), np.concatenate([train_labels, test_labels]))
    assert len(everything.inputs) == 6


def test_cifar10_binary_image_bytes_are_channels_first(tmp_path, rng):
    folder = tmp_path / "c10"
    written = write_cifar10_binary(folder, rng)
    record = (folder / "test_batch.bin").read_bytes()[:3073]
    image = open_dataset(str(folder), split="test").read(0, 1)[0]
    assert image[0, 0, 1] == record[2]  # red plane, row 0, column 1
    assert image[1, 0, 0] == record[1 + 1024]  # green plane starts after 1024 red bytes
    np.testing.assert_array_equal(image, written["test_batch.bin"][0][0])


@settings(max_examples=40, deadline=None)
@given(start=st.integers(0, 18), length=st.integers(0, 18))
def test_cifar_reads_across_batch_boundaries(tmp_path_factory, start, length):
    folder = tmp_path_factory.getbasetemp() / "c10-hypothesis"
    if not folder.exists():
        write_cifar10_binary(folder, np.random.default_rng(5))
    data = open_dataset(str(folder))
    everything = data.read(0, data.num_samples)
    np.testing.assert_array_equal(data.read(start, start + length), everything[start : start + length])


def test_cifar100_binary_uses_fine_labels(tmp_path, rng):
    folder = tmp_path / "cifar-100-binary"
    written = write_cifar100_binary(folder, rng)
    data = open_dataset(str(folder), split="train", limit=5)
    images, _, fine = written["train.bin"]
    assert data.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(data.read(0, 5), images[:5])
    np.testing.assert_array_equal(data.labels(), fine[:5])
    everything = open_dataset(str(folder))
    assert everything.num_samples == 11
    np.testing.assert_array_equal(everything.labels()[7:], written["test.bin"][2])
    assert [r.path for r in everything.inputs] == [str(folder / "train.bin"), str(folder / "test.bin")]


def test_cifar_binary_is_memory_mapped(tmp_path, rng):
    folder = tmp_path / "big100"
    write_cifar100_binary(folder, rng, train_count=4000, test_count=1)  # 12 MiB

    def open_and_read():
        data = open_dataset(str(folder), split="train")
        return data.read(3990, 4000)

    rows, peak = traced_peak_bytes(open_and_read)
    assert rows.shape == (10, 3, 32, 32)
    assert peak < 4 * 2**20, f"opening and reading 10 records allocated {peak} bytes"


def test_parent_folder_is_searched_one_level_down(tmp_path, rng):
    written = write_cifar10_binary(tmp_path / "root" / "cifar-10-batches-bin", rng)
    data = open_dataset(str(tmp_path / "root"), split="test")
    np.testing.assert_array_equal(data.read(0, 5), written["test_batch.bin"][0])


def test_cifar_binary_with_partial_record(tmp_path, rng):
    folder = tmp_path / "c10"
    write_cifar10_binary(folder, rng)
    path = folder / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-7])
    message = input_error(open_dataset, str(folder), split="train")
    assert "data_batch_2.bin" in message and "multiple of the 3073-byte" in message


def test_cifar100_file_in_cifar10_format_is_refused(tmp_path, rng):
    folder = tmp_path / "c100"
    write_cifar100_binary(folder, rng)
    (folder / "test.bin").write_bytes(b"\0" * 3073 * 3)  # three CIFAR-10 records
    assert "3074-byte" in input_error(open_dataset, str(folder), split="test")


def test_incomplete_cifar10_folder_names_missing_files(tmp_path, rng):
    folder = tmp_path / "c10"
    write_cifar10_binary(folder, rng)
    (folder / "data_batch_3.bin").unlink()
    message = input_error(open_dataset, str(folder))
    assert "incomplete CIFAR-10 binary" in message and "data_batch_3.bin" in message


def test_empty_split_is_an_error(tmp_path, rng):
    folder = tmp_path / "c10"
    write_cifar10_binary(folder, rng, test_count=0)
    assert open_dataset(str(folder), split="train").num_samples == 12
    assert "no samples" in input_error(open_dataset, str(folder), split="test")


def test_folder_with_no_data_set(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    assert "no recognisable data set" in input_error(open_dataset, str(tmp_path))


def test_folder_with_two_data_sets_is_ambiguous(tmp_path, rng):
    write_cifar10_binary(tmp_path / "a", rng)
    write_mnist(tmp_path / "b", rng)
    assert "several data sets" in input_error(open_dataset, str(tmp_path))


# --- CIFAR python ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_python(tmp_path, rng, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    written = write_cifar10_python(folder, rng, protocol=protocol)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    data = open_dataset(str(folder), split="train")
    assert data.shape == (10, 3, 32, 32) and data.dtype == np.uint8
    np.testing.assert_array_equal(data.read(0, 10), np.concatenate([written[n][0] for n in names]))
    np.testing.assert_array_equal(data.labels(), np.concatenate([written[n][1] for n in names]))
    assert [r.sha256 for r in data.inputs] == [sha256_of(folder / n) for n in names]
    test = open_dataset(str(folder), split="test")
    np.testing.assert_array_equal(test.read(0, 3), written["test_batch"][0])


def test_cifar100_python_uses_fine_labels(tmp_path, rng):
    folder = tmp_path / "cifar-100-python"
    written = write_cifar100_python(folder, rng)
    data = open_dataset(str(folder))
    assert data.shape == (9, 3, 32, 32)
    np.testing.assert_array_equal(data.read(0, 9), np.concatenate([written["train"][0], written["test"][0]]))
    np.testing.assert_array_equal(data.labels(), np.concatenate([written["train"][1], written["test"][1]]))


class _RunsShellCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _cifar100_with_train_pickle(folder: Path, rng, payload: object) -> None:
    write_cifar100_python(folder, rng)
    with open(folder / "train", "wb") as handle:
        pickle.dump(payload, handle)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, rng):
    marker = tmp_path / "pwned"
    folder = tmp_path / "c100"
    _cifar100_with_train_pickle(folder, rng, {b"data": _RunsShellCommand(f"touch {marker}")})
    message = input_error(open_dataset, str(folder))
    assert f"refused to unpickle {os.system.__module__}.system" in message
    assert "only numpy arrays, lists and dicts are allowed" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {b"data": np.load},  # a numpy function that is not an array builder
        {b"data": [pickle.loads]},  # any other global, even nested in a list
        {b"data": Path("/etc/passwd")},  # arbitrary classes
    ],
)
def test_pickles_with_other_globals_are_refused(tmp_path, rng, payload):
    folder = tmp_path / "c100"
    _cifar100_with_train_pickle(folder, rng, payload)
    assert "refused to unpickle" in input_error(open_dataset, str(folder), split="train")


def test_codecs_encode_is_allowed_only_for_latin1(tmp_path, rng):
    folder = tmp_path / "c100"
    write_cifar100_python(folder, rng)
    # Hand-made protocol 2 pickle: _codecs.encode("x", "rot13").
    (folder / "train").write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    assert "refused to unpickle" in input_error(open_dataset, str(folder), split="train")


def test_corrupt_cifar_pickle(tmp_path, rng):
    folder = tmp_path / "c100"
    write_cifar100_python(folder, rng)
    (folder / "train").write_bytes((folder / "train").read_bytes()[:200])
    assert "not a readable CIFAR python batch" in input_error(open_dataset, str(folder), split="train")


def test_cifar_pickle_with_wrong_data(tmp_path, rng):
    folder = tmp_path / "c100"
    _cifar100_with_train_pickle(folder, rng, {b"data": np.zeros((2, 3072), np.float32), b"fine_labels": [1, 2]})
    assert "only uint8 arrays are accepted" in input_error(open_dataset, str(folder), split="train")


def test_cifar_pickle_with_wrong_labels(tmp_path, rng):
    folder = tmp_path / "c100"
    _cifar100_with_train_pickle(folder, rng, {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [1]})
    assert "'fine_labels' must be 2 integer labels" in input_error(open_dataset, str(folder), split="train")


# --- MNIST IDX ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped, dotted", [(False, False), (True, False), (False, True), (True, True)])
def test_mnist_idx(tmp_path, rng, gzipped, dotted):
    folder = tmp_path / "mnist"
    written = write_mnist(folder, rng, gzipped=gzipped, dotted=dotted)
    train = open_dataset(str(folder), split="train")
    assert train.shape == (6, 1, 28, 28) and train.dtype == np.uint8
    np.testing.assert_array_equal(train.read(0, 6)[:, 0], written["train"][0])
    np.testing.assert_array_equal(train.labels(), written["train"][1])
    assert [Path(r.path).name.startswith("train-") for r in train.inputs] == [True, True]
    assert all(r.sha256 == sha256_of(r.path) for r in train.inputs)
    everything = open_dataset(str(folder), limit=8)
    assert everything.shape == (8, 1, 28, 28)
    np.testing.assert_array_equal(everything.read(6, 8)[:, 0], written["test"][0][:2])
    np.testing.assert_array_equal(everything.labels()[6:], written["test"][1][:2])
    assert len(everything.inputs) == 4


def test_mnist_other_image_size(tmp_path, rng):
    written = write_mnist(tmp_path, rng, rows=5, cols=7)
    data = open_dataset(str(tmp_path), split="test")
    assert data.shape == (4, 1, 5, 7)
    np.testing.assert_array_equal(data.read(0, 4)[:, 0], written["test"][0])


def test_mnist_torchvision_layout_and_raw_preferred_over_gz(tmp_path, rng):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw, rng, gzipped=True)
    written = write_mnist(raw, rng, gzipped=False)  # different content under the raw names
    data = open_dataset(str(tmp_path), split="train")
    np.testing.assert_array_equal(data.read(0, 6)[:, 0], written["train"][0])
    assert [r.path for r in data.inputs] == [str(raw / "train-images-idx3-ubyte"), str(raw / "train-labels-idx1-ubyte")]


def test_mnist_raw_is_memory_mapped(tmp_path, rng):
    write_mnist(tmp_path, rng, train_count=20000, test_count=1)  # 15 MiB of images

    def open_and_read():
        return open_dataset(str(tmp_path), split="train").read(5, 15)

    rows, peak = traced_peak_bytes(open_and_read)
    assert rows.shape == (10, 1, 28, 28)
    assert peak < 4 * 2**20, f"opening and reading 10 images allocated {peak} bytes"


def test_mnist_bad_magic(tmp_path, rng):
    write_mnist(tmp_path, rng)
    # A label file where the image file should be.
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros(4, np.uint8))
    message = input_error(open_dataset, str(tmp_path), split="test")
    assert "bad IDX magic number 0x00000801" in message and "0x00000803" in message


def test_mnist_truncated_raw(tmp_path, rng):
    write_mnist(tmp_path, rng)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    assert "truncated" in input_error(open_dataset, str(tmp_path))


def test_mnist_truncated_header(tmp_path, rng):
    write_mnist(tmp_path, rng)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:6])
    assert "truncated" in input_error(open_dataset, str(tmp_path))


def test_mnist_trailing_bytes(tmp_path, rng):
    write_mnist(tmp_path, rng)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes() + b"\0")
    assert "longer than its header" in input_error(open_dataset, str(tmp_path))


def test_mnist_truncated_gz_payload(tmp_path, rng):
    write_mnist(tmp_path, rng, gzipped=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    images = np.zeros((4, 28, 28), np.uint8)
    path.write_bytes(gzip.compress(idx_bytes(images)[:-10]))  # a valid gzip of too few bytes
    assert "truncated" in input_error(open_dataset, str(tmp_path), split="test")


def test_mnist_cut_gzip_stream(tmp_path, rng):
    write_mnist(tmp_path, rng, gzipped=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    assert "gzip" in input_error(open_dataset, str(tmp_path), split="test")


def test_mnist_gz_that_is_not_gzip(tmp_path, rng):
    write_mnist(tmp_path, rng, gzipped=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain bytes, not gzip")
    assert "not a readable gzip file" in input_error(open_dataset, str(tmp_path), split="test")


def test_mnist_label_count_mismatch(tmp_path, rng):
    write_mnist(tmp_path, rng)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    assert "5 labels for the 6 images" in input_error(open_dataset, str(tmp_path), split="train")


def test_incomplete_mnist_folder(tmp_path, rng):
    write_mnist(tmp_path, rng)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    message = input_error(open_dataset, str(tmp_path))
    assert "incomplete MNIST IDX" in message and "t10k-labels-idx1-ubyte" in message


# --- to_unit_float -----------------------------------------------------------------------------


def test_to_unit_float_scales_uint8_exactly():
    values = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    scaled = to_unit_float(values)
    assert scaled.dtype == torch.float32
    expected = np.arange(256, dtype=np.float32).reshape(16, 16) / np.float32(255)
    assert torch.equal(scaled, torch.from_numpy(expected))
    assert scaled[0, 0].item() == 0.0 and scaled[-1, -1].item() == 1.0
    assert torch.equal(values, torch.arange(256, dtype=torch.uint8).reshape(16, 16))  # input untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64, torch.bool])
def test_to_unit_float_keeps_other_values(dtype):
    values = torch.tensor([[0.0, 0.25, 1.0, 3.0]]).to(dtype)  # 0.25 → 0 as int64, → True as bool
    out = to_unit_float(values)
    assert out.dtype == torch.float32
    assert torch.equal(out.double(), values.double())  # the same numbers, not divided by 255


def test_to_unit_float_is_device_agnostic():
    meta = to_unit_float(torch.empty((2, 3), dtype=torch.uint8, device="meta"))
    assert meta.device.type == "meta" and meta.dtype == torch.float32


def test_dataset_batches_scale_like_the_documentation(tmp_path, rng):
    x = rng.integers(0, 256, size=(5, 2, 3), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, x)
    batch = to_unit_float(torch.from_numpy(open_dataset(str(path)).read(0, 5)))
    np.testing.assert_array_equal(batch.numpy(), x.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_big_endian_files_read_in_native_byte_order(tmp_path, rng, suffix):
    x = rng.random((30, 4)).astype(">f4")
    path = tmp_path / f"x{suffix}"
    np.save(path, x) if suffix == ".npy" else np.savez(path, x=x)
    data = open_dataset(str(path))
    rows = data.read(3, 9)
    assert rows.dtype.isnative and data.dtype == np.float32
    np.testing.assert_array_equal(rows, x[3:9].astype(np.float32))
    torch.from_numpy(rows)  # what the pass does with them: torch refuses foreign byte orders


def test_reads_of_a_file_are_owned_arrays_and_not_copied_again(tmp_path, rng, monkeypatch):
    x = rng.random((40, 5)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    data = open_dataset(str(path))
    copies = []
    real_array = np.array
    monkeypatch.setattr(np, "array", lambda *a, **k: copies.append(1) or real_array(*a, **k))
    first, second = data.read(0, 10), data.read(0, 10)
    assert not copies and first.flags.owndata and first is not second
    first[:] = -1  # a caller may write into what it was given: the next read is unaffected
    np.testing.assert_array_equal(data.read(0, 10), x[:10])
