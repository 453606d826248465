"""Every data set a SPEC string can name, in one explicit table, and :func:`open_dataset`.

A SPEC is a built-in name (``digits``), a data file (chosen by its suffix) or a folder (chosen by
the files it holds; see :mod:`auditor.sources.datasets.folders`). The formats, in the order they
are tried: see :data:`FILE_FORMATS` and :data:`FOLDER_FORMATS`. A file or folder literally named
``digits`` is reached as ``./digits``. Data without a split of its own are split by the file
split rule (:mod:`auditor.sources.datasets.split_rule`). Every user mistake is an
:class:`AuditInputError` with a one-line message.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import AuditInputError, printable
from ..hashing import InputRecord, computed_digest, file_record
from . import digits
from .arrow_file import ArrowTableFile
from .arrow_parts import IpcPart, ParquetPart
from .cifar_binary import cifar_binary_opener
from .cifar_python import cifar_pickle_opener
from .dataset import Dataset, check_limit, checked_split
from .folders import FixedFilesLayout, recognise_folder
from .image_folder import ImageFolder, manifest_sha256
from .interface import FileFormat, FolderFormat, Rows
from .mnist_idx import idx_spellings, open_idx_split
from .options import OPTION_NAMES, DataOptions
from .saved_dataset import SavedDataset
from .split_rule import DEFAULT_TEST_EVERY, apply_split_rule, rule_text
from .tensor_file import TensorFile
from .tiny_imagenet import TinyImageNet

# Built-in data sets: name → description.
DATASETS: dict[str, str] = {"digits": digits.DESCRIPTION}

FILE_FORMATS: tuple[FileFormat, ...] = (
    TensorFile(),
    ArrowTableFile("Parquet file", (".parquet",), ParquetPart),
    ArrowTableFile("Arrow IPC file", (".arrow",), IpcPart),
)

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
    ImageFolder(),
    SavedDataset(),
)


def open_dataset(
    spec: str,
    split: str | None = None,
    limit: int | None = None,
    role: str = "data",
    options: DataOptions | None = None,
) -> Dataset:
    """Open data set ``spec`` (see the module docstring) for lazy reading.

    ``split`` defaults to ``"all"``; ``limit`` keeps the first ``limit`` samples of the split;
    ``options`` are the reading options (:class:`DataOptions`), each refused by a format that does
    not use it.
    """
    spec = str(spec)
    split = checked_split(split)
    check_limit(limit)
    options = options if options is not None else DataOptions()
    if spec in DATASETS:
        _refuse_options(options, f"the built-in data set {spec}", frozenset())
        _refuse_test_every(options, f"the built-in data set {spec}")
        source, inputs = digits.open_digits(split), [digits.digits_record(role)]
    else:
        source = _open_path(spec, split, options)
        inputs = [file_record(role, path) for path in source.files]
        inputs += [image_folder_record(role, folder) for folder in source.image_folders]
    every = options.test_every or DEFAULT_TEST_EVERY
    rule = rule_text(every) if source.split_rule else None
    if source.split_rule:
        source = apply_split_rule(source, split, every)
    dataset = Dataset(spec, split, source.rows, source.labels, inputs, limit, rule)
    if dataset.num_samples == 0:
        raise AuditInputError(f"data set {spec!r} (split {split}) has no samples")
    return dataset


def image_folder_record(role: str, folder: Path) -> InputRecord:
    """An image folder as one input: the sha256 of its manifest (hashed in the background in an audit)."""
    return InputRecord(role, str(folder), computed_digest(lambda cancelled: manifest_sha256(folder, cancelled)))


def _refuse_options(options: DataOptions, what: str, takes: frozenset[str]) -> None:
    """A reading option the data would ignore is a mistake: refuse it rather than drop it."""
    for name in options.given():
        if name != "test_every" and name not in takes:
            raise AuditInputError(f"{OPTION_NAMES[name]} does not apply to {what}")


def _refuse_test_every(options: DataOptions, what: str) -> None:
    if options.test_every is not None:
        raise AuditInputError(
            f"--test-every sets the split of data without one of their own, but {what} has its own train/test split"
        )


def _open_path(spec: str, split: str, options: DataOptions) -> Rows:
    path = Path(spec)
    if not path.exists():
        raise AuditInputError(
            f"unknown data set {spec!r}: not a built-in ({', '.join(DATASETS)}) and no such file or folder"
        )
    if path.is_dir():
        folder, layout = recognise_folder(path, FOLDER_FORMATS)
        return _opened(layout, folder, split, options)
    for file_format in FILE_FORMATS:
        if path.suffix.lower() in file_format.suffixes:
            return _opened(file_format, path, split, options)
    known = ", ".join(suffix for file_format in FILE_FORMATS for suffix in file_format.suffixes)
    raise AuditInputError(f"{path}: unsupported file type {path.suffix.lower()!r} (use {known}, or a data folder)")


def _opened(data_format: FileFormat | FolderFormat, path: Path, split: str, options: DataOptions) -> Rows:
    what = f"{printable(path)} ({data_format.name})"
    _refuse_options(options, what, data_format.takes)  # before the format reads anything
    rows = data_format.open(path, split, options)
    if not rows.split_rule:
        _refuse_test_every(options, what)
    return rows
