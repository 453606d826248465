"""Every data set a SPEC string can name, in one explicit table, and :func:`open_dataset`.

A SPEC is a built-in name (``digits``), a data file (chosen by its suffix) or a folder (chosen by
the files it holds; see :mod:`auditor.sources.datasets.folders`). The formats, in the order they
are tried: see :data:`FILE_FORMATS` and :data:`FOLDER_FORMATS`. A file or folder literally named
``digits`` is reached as ``./digits``. Every user mistake is an :class:`AuditInputError` with a
one-line message.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import AuditInputError
from ..hashing import file_record
from . import digits
from .cifar_binary import cifar_binary_opener
from .cifar_python import cifar_pickle_opener
from .dataset import Dataset, check_limit, checked_split
from .folders import FixedFilesLayout, open_folder
from .interface import FileFormat, FolderFormat, Rows
from .mnist_idx import idx_spellings, open_idx_split
from .tensor_file import TensorFile
from .tiny_imagenet import TinyImageNet

# Built-in data sets: name → description.
DATASETS: dict[str, str] = {"digits": digits.DESCRIPTION}

FILE_FORMATS: tuple[FileFormat, ...] = (TensorFile(),)

FOLDER_FORMATS: tuple[FolderFormat, ...] = (
    FixedFilesLayout(
        "CIFAR-10 binary",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        ("test_batch.bin",),
        cifar_binary_opener(label_bytes=1),
    ),
    FixedFilesLayout("CIFAR-100 binary", ("train.bin",), ("test.bin",), cifar_binary_opener(label_bytes=2)),
    FixedFilesLayout(
        "CIFAR-10 python", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), cifar_pickle_opener("labels")
    ),
    FixedFilesLayout("CIFAR-100 python", ("train",), ("test",), cifar_pickle_opener("fine_labels")),
    FixedFilesLayout(
        "MNIST IDX",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        open_idx_split,
        idx_spellings,
    ),
    TinyImageNet(),
)


def open_dataset(spec: str, split: str | None = None, limit: int | None = None, role: str = "data") -> Dataset:
    """Open data set ``spec`` (see the module docstring) for lazy reading.

    ``split`` defaults to ``"all"``; ``limit`` keeps the first ``limit`` samples of the split.
    """
    spec = str(spec)
    split = checked_split(split)
    check_limit(limit)
    if spec in DATASETS:
        source, inputs = digits.open_digits(split), [digits.digits_record(role)]
    else:
        source = _open_path(spec, split)
        inputs = [file_record(role, path) for path in source.files]
    dataset = Dataset(spec, split, source.rows, source.labels, inputs, limit)
    if dataset.num_samples == 0:
        raise AuditInputError(f"data set {spec!r} (split {split}) has no samples")
    return dataset


def _open_path(spec: str, split: str) -> Rows:
    path = Path(spec)
    if not path.exists():
        raise AuditInputError(
            f"unknown data set {spec!r}: not a built-in ({', '.join(DATASETS)}) and no such file or folder"
        )
    if path.is_dir():
        return open_folder(path, split, FOLDER_FORMATS)
    for file_format in FILE_FORMATS:
        if path.suffix.lower() in file_format.suffixes:
            return file_format.open(path, split)
    known = ", ".join(suffix for file_format in FILE_FORMATS for suffix in file_format.suffixes)
    raise AuditInputError(f"{path}: unsupported file type {path.suffix.lower()!r} (use {known}, or a data folder)")
