"""Audit sets and training data: where the samples come from, read lazily, row range by row range.

A data set is named by a SPEC string, one of:

``digits``
    Built in: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``, bundled with
    scikit-learn, no download): 1797 samples of 64 pixels with values 0–16, divided by 16 into
    float32 in [0, 1]; labels are the digits 0–9. Fixed split: sample ``i`` is in **test** when
    ``i % 5 == 0`` (360 samples) and in **train** otherwise (1437 samples). Its input record is
    ``builtin:digits`` with the sha256 of ``load_digits().data`` (float64, C order, before the
    division by 16), so a verifier can recompute it. A file or folder literally named ``digits``
    is reached as ``./digits``.

``FILE.npz`` / ``FILE.npy`` / ``FILE.safetensors``
    A tensor file with the samples in array ``x``, one sample per row: shape (N, D) or
    (N, C, H, W) or any (N, ...) with at least 2 dimensions; integer labels may be given in
    array ``y`` of shape (N,) (a ``.npy`` file holds one array, ``x``, and so has no labels).
    ``.npy`` and ``.safetensors`` files are read row range by row range, so only the rows
    asked for are read (a ``.npz`` member is read whole, once).
    A file has no built-in split: only ``all``.

``FOLDER`` holding CIFAR-10 or CIFAR-100 in the *binary* version
    CIFAR-10: ``data_batch_1.bin`` … ``data_batch_5.bin`` (train) and ``test_batch.bin`` (test),
    records of 1 label byte + 3072 image bytes. CIFAR-100: ``train.bin`` and ``test.bin``,
    records of 2 label bytes (coarse, fine; the fine label is used) + 3072 image bytes.
    Memory-mapped; samples have shape (3, 32, 32), uint8, channels first.

``FOLDER`` holding CIFAR-10 or CIFAR-100 in the *python* version
    CIFAR-10: pickles ``data_batch_1`` … ``data_batch_5`` and ``test_batch``, each a dict with
    ``data`` (N × 3072 uint8) and ``labels``; CIFAR-100: ``train`` and ``test`` with
    ``fine_labels``. They are read with a restricted unpickler that builds numpy arrays, lists,
    dicts, strings and numbers and refuses everything else, so a pickle from a stranger cannot
    run code. Samples (3, 32, 32) uint8.

``FOLDER`` holding MNIST-style IDX files
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` (also ``train-images.idx3-ubyte`` spelling, each optionally
    ``.gz``; MNIST, Fashion-MNIST and KMNIST use these names). Magic numbers and sizes are
    checked against the files; raw files are memory-mapped, gzipped ones decompressed once.
    Samples (1, rows, cols) uint8, normally (1, 28, 28).

A folder is recognised by the files it holds, whatever its name (``cifar-10-batches-bin``,
``cifar-100-python``, ``MNIST/raw`` …). When the folder itself holds no data set but exactly
one of its subfolders (or a subfolder's ``raw`` folder, as torchvision lays MNIST out) does,
that one is used.

Splits: ``train``, ``test`` or ``all``; for folders ``all`` is train followed by test.
**The default split is ``all`` for every spec**: choose another with ``--split``.
``--limit L`` keeps the first L samples of the split.

Samples keep their stored dtype: uint8 stays uint8 (so it crosses to the device as bytes) and
:func:`to_unit_float` scales it to [0, 1] there; float data is used as stored. NaN and inf are
not looked for here: the audit pass checks each batch on the device, and no file is scanned
whole to open it. Every user mistake is an :class:`AuditInputError` with a one-line message.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ...errors import AuditInputError
from ..hashing import sha256_file
from ..arrays import ArrayReader, InMemoryArray, open_array, read_whole

if TYPE_CHECKING:
    import torch

DATASETS: dict[str, str] = {
    "digits": "scikit-learn handwritten digits: 1797 x 64, values/16 in [0, 1]; test = i % 5 == 0",
}
SPLITS = ("train", "test", "all")

_CIFAR_SAMPLE_SHAPE = (3, 32, 32)
_CIFAR_IMAGE_BYTES = 3 * 32 * 32
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


@dataclass(frozen=True)
class InputRecord:
    """One file (or built-in source) an audit read, as the certificate lists it."""

    role: str  # e.g. "data", "teacher-data"
    path: str  # the file path, or "builtin:<name>"
    sha256: str


@dataclass
class _Source:
    """Rows, labels and files of one split before the limit is applied."""

    rows: ArrayReader
    labels: Callable[[], np.ndarray | None]
    files: list[Path]


class Dataset:
    """The samples of one split of a data set, read lazily; an ``ArrayReader``.

    ``shape`` is (N, *sample_shape) after split and limit; ``dtype`` is the stored dtype in
    this machine's byte order (torch takes no other; a big-endian file is swapped as it is read).
    """

    def __init__(self, spec: str, split: str, rows: ArrayReader,
                 labels: Callable[[], np.ndarray | None], inputs: Sequence[InputRecord],
                 limit: int | None = None):
        count = rows.shape[0] if limit is None else min(limit, rows.shape[0])
        self.spec = spec
        self.split = split
        self.shape: tuple[int, ...] = tuple(int(size) for size in (count, *rows.shape[1:]))
        self.dtype = np.dtype(rows.dtype).newbyteorder("=")
        self.inputs = list(inputs)
        self._rows = rows
        self._read_labels = labels
        self._labels: np.ndarray | None = None

    @property
    def num_samples(self) -> int:
        return self.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the split (stop is clipped to N), as an owned C-order array."""
        if start < 0 or stop < 0:
            raise ValueError(f"row range [{start}, {stop}) must not be negative")
        stop = min(stop, self.num_samples)
        if stop <= start:
            return np.empty((0, *self.sample_shape), self.dtype)
        rows = self._rows.read(start, stop)
        if rows.flags.owndata and rows.flags.c_contiguous and rows.flags.writeable and rows.dtype == self.dtype:
            return rows  # a reader's fresh array (file readers make one per read): already owned
        # A copy, so callers never hold a view into a memory map or into a cached array.
        return np.array(rows, dtype=self.dtype, order="C", copy=True)

    def labels(self) -> np.ndarray | None:
        """Integer labels (int64) of the split's rows, or None when the data set has none."""
        if self._labels is None:
            # Read once: for CIFAR binary this walks every record of the files.
            labels = self._read_labels()
            if labels is None:
                return None
            self._labels = np.array(labels[: self.num_samples], dtype=np.int64)
        return self._labels.copy()

    def __repr__(self) -> str:
        return (f"Dataset(spec={self.spec!r}, split={self.split!r}, shape={self.shape}, "
                f"dtype={self.dtype})")


def open_dataset(spec: str, split: str | None = None, limit: int | None = None,
                 role: str = "data") -> Dataset:
    """Open data set ``spec`` (see the module docstring) for lazy reading.

    ``split`` defaults to ``"all"``; ``limit`` keeps the first ``limit`` samples of the split.
    """
    spec = str(spec)
    split = _checked_split(split)
    _check_limit(limit)
    if spec in DATASETS:
        source, inputs = _open_digits(split), [_digits_record(role)]
    else:
        source = _open_path(spec, split)
        inputs = [InputRecord(role, str(path), sha256_file(path)) for path in source.files]
    dataset = Dataset(spec, split, source.rows, source.labels, inputs, limit)
    if dataset.num_samples == 0:
        raise AuditInputError(f"data set {spec!r} (split {split}) has no samples")
    return dataset


def to_unit_float(batch: "torch.Tensor") -> "torch.Tensor":
    """uint8 → float32 / 255 (exactly [0, 1]); any other dtype → float32, values unchanged.

    Pure torch ops on the batch's own device, so uint8 batches cross to the GPU as bytes.
    """
    import torch

    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255)
    return batch.to(torch.float32)


# --- arguments ---------------------------------------------------------------------------------

def _checked_split(split: str | None) -> str:
    if split is None:
        return "all"
    if split not in SPLITS:
        raise AuditInputError(f"unknown split {split!r}: use train, test or all")
    return split


def _check_limit(limit: int | None) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise AuditInputError(f"--limit must be a whole number of samples >= 1, got {limit!r}")


def _open_path(spec: str, split: str) -> _Source:
    path = Path(spec)
    if not path.exists():
        raise AuditInputError(
            f"unknown data set {spec!r}: not a built-in ({', '.join(DATASETS)}) "
            f"and no such file or folder"
        )
    if path.is_dir():
        return _open_folder(path, split)
    return _open_tensor_file(path, split)


# --- built-in: digits --------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """load_digits() pixels (float64, 0–16) and targets, read-only so the cache stays intact."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.ascontiguousarray(bunch.data)
    targets = np.asarray(bunch.target, dtype=np.int64)
    pixels.flags.writeable = False
    targets.flags.writeable = False
    return pixels, targets


def digits_test_mask(count: int = 1797) -> np.ndarray:
    """The documented digits split: sample i is a test sample when i % 5 == 0."""
    return np.arange(count) % 5 == 0


def _open_digits(split: str) -> _Source:
    pixels, targets = _digits_raw()
    is_test = digits_test_mask(len(pixels))
    keep = {"all": np.ones_like(is_test), "test": is_test, "train": ~is_test}[split]
    # Division by 16 is exact in float32 (values are the integers 0–16).
    scaled = pixels[keep].astype(np.float32) / np.float32(16)
    labels = targets[keep]
    return _Source(InMemoryArray(scaled), lambda: labels, [])


def _digits_record(role: str) -> InputRecord:
    pixels, _ = _digits_raw()
    return InputRecord(role, "builtin:digits", hashlib.sha256(pixels.tobytes()).hexdigest())


# --- tensor files ------------------------------------------------------------------------------

def _open_tensor_file(path: Path, split: str) -> _Source:
    if split != "all":
        raise AuditInputError(
            f"{path}: a data file has no built-in train/test split; use --split all "
            f"(the default) or split the file yourself"
        )
    rows = open_array(path, "x", required=True)
    if len(rows.shape) < 2:
        raise AuditInputError(
            f"{path}: array 'x' has shape {tuple(rows.shape)}; expected one sample per row, "
            f"shape (N, D) or (N, C, H, W)"
        )
    return _Source(rows, _file_labels(path, rows.shape[0]), [path])


def _file_labels(path: Path, count: int) -> Callable[[], np.ndarray | None]:
    """Reader of the optional 'y' array, checked now (shape, dtype) and read when asked for."""
    if path.suffix.lower() == ".npy":
        return lambda: None  # the one array of a .npy file is x
    labels = open_array(path, "y", required=False)
    if labels is None:
        return lambda: None
    if tuple(labels.shape) != (count,):
        raise AuditInputError(
            f"{path}: array 'y' has shape {tuple(labels.shape)}; expected integer labels of shape ({count},)"
        )
    if np.dtype(labels.dtype).kind not in "iu":
        raise AuditInputError(f"{path}: array 'y' has dtype {labels.dtype}; labels must be integers")
    return lambda: read_whole(path, "y")


# --- folders: recognition ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    """A folder format: the files of each split, and how to open one split's files."""

    name: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    open_split: Callable[[list[Path]], _Source]
    spellings: Callable[[str], tuple[str, ...]] = lambda name: (name,)

    def find(self, folder: Path, name: str) -> Path | None:
        for spelling in self.spellings(name):
            if (folder / spelling).is_file():
                return folder / spelling
        return None

    def missing(self, folder: Path) -> list[str]:
        return [name for name in self.train + self.test if self.find(folder, name) is None]

    def files(self, folder: Path, split: str) -> list[Path]:
        names = {"train": self.train, "test": self.test, "all": self.train + self.test}[split]
        return [self.find(folder, name) for name in names]


def _open_folder(folder: Path, split: str) -> _Source:
    folder, layout = _recognise_folder(folder)
    if split == "all":
        parts = [layout.open_split(layout.files(folder, "train")),
                 layout.open_split(layout.files(folder, "test"))]
        return _concatenate(parts, f"{folder} ({layout.name})")
    return layout.open_split(layout.files(folder, split))


def _recognise_folder(folder: Path) -> tuple[Path, _Layout]:
    """The folder (this one, or one subfolder) and format of the data set it holds."""
    own = _complete_layouts(folder)
    if len(own) == 1:
        return folder, own[0]
    if len(own) > 1:
        raise AuditInputError(
            f"{folder}: holds several data sets ({', '.join(l.name for l in own)}); "
            f"move one to its own folder"
        )
    found = [(sub, layout) for sub in _subfolders(folder) for layout in _complete_layouts(sub)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        listing = ", ".join(f"{sub} ({layout.name})" for sub, layout in found)
        raise AuditInputError(f"{folder}: holds several data sets: {listing}; name one of them")
    raise _unrecognised(folder)


def _complete_layouts(folder: Path) -> list[_Layout]:
    return [layout for layout in _LAYOUTS if not layout.missing(folder)]


def _subfolders(folder: Path) -> list[Path]:
    children = sorted(child for child in folder.iterdir() if child.is_dir())
    return children + [child / "raw" for child in children if (child / "raw").is_dir()]


def _unrecognised(folder: Path) -> AuditInputError:
    # A partly present layout is most likely what the user meant: name its missing files.
    for layout in _LAYOUTS:
        missing = layout.missing(folder)
        if len(missing) < len(layout.train + layout.test):
            return AuditInputError(
                f"{folder}: incomplete {layout.name} folder: missing {', '.join(missing)}"
            )
    return AuditInputError(
        f"{folder}: no recognisable data set in this folder (expected CIFAR-10/100 binary or "
        f"python files, or MNIST IDX files)"
    )


def _concatenate(parts: list[_Source], what: str) -> _Source:
    if len(parts) == 1:
        return parts[0]
    shapes = {tuple(part.rows.shape[1:]) for part in parts}
    dtypes = {np.dtype(part.rows.dtype) for part in parts}
    if len(shapes) > 1 or len(dtypes) > 1:
        raise AuditInputError(f"{what}: files disagree on the sample shape or dtype")
    return _Source(_ConcatenatedRows([part.rows for part in parts]),
                   _concatenated_labels([part.labels for part in parts]),
                   [path for part in parts for path in part.files])


def _concatenated_labels(readers: list[Callable[[], np.ndarray | None]]) -> Callable[[], np.ndarray | None]:
    def labels() -> np.ndarray | None:
        pieces = [reader() for reader in readers]
        if any(piece is None for piece in pieces):
            return None
        return np.concatenate([np.asarray(piece, dtype=np.int64) for piece in pieces])

    return labels


class _ConcatenatedRows:
    """Several row readers read as one, in order; a read touches only the parts it overlaps."""

    def __init__(self, parts: list[ArrayReader]):
        self._parts = parts
        self._starts = [0]
        for part in parts:
            self._starts.append(self._starts[-1] + part.shape[0])
        self.shape = (self._starts[-1], *parts[0].shape[1:])
        self.dtype = np.dtype(parts[0].dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for part, begin, end in zip(self._parts, self._starts, self._starts[1:]):
            low, high = max(start, begin), min(stop, end)
            if low < high:
                pieces.append(part.read(low - begin, high - begin))
        if not pieces:
            return np.empty((0, *self.shape[1:]), self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


# --- CIFAR binary ------------------------------------------------------------------------------

class _CifarRecordFile:
    """One CIFAR binary file: records of label bytes then a 3×32×32 image, memory-mapped."""

    def __init__(self, path: Path, label_bytes: int):
        record = label_bytes + _CIFAR_IMAGE_BYTES
        size = path.stat().st_size
        if size % record:
            raise AuditInputError(
                f"{path}: size {size} is not a multiple of the {record}-byte CIFAR record "
                f"(truncated or not this CIFAR version)"
            )
        count = size // record
        # np.memmap refuses empty files; an empty batch is simply zero records.
        self._records = (np.memmap(path, dtype=np.uint8, mode="r", shape=(count, record))
                         if count else np.empty((0, record), np.uint8))
        self._label_bytes = label_bytes
        self.shape = (count, *_CIFAR_SAMPLE_SHAPE)
        self.dtype = np.dtype(np.uint8)

    def read(self, start: int, stop: int) -> np.ndarray:
        images = self._records[start:stop, self._label_bytes:]
        return np.ascontiguousarray(images).reshape(-1, *_CIFAR_SAMPLE_SHAPE)

    def labels(self) -> np.ndarray:
        # The last label byte: the only one in CIFAR-10, the fine label in CIFAR-100.
        return np.array(self._records[:, self._label_bytes - 1], dtype=np.int64)


def _cifar_binary_opener(label_bytes: int) -> Callable[[list[Path]], _Source]:
    def open_split(paths: list[Path]) -> _Source:
        parts = []
        for path in paths:
            records = _CifarRecordFile(path, label_bytes)
            parts.append(_Source(records, records.labels, [path]))
        return _concatenate(parts, str(paths[0].parent))

    return open_split


# --- CIFAR python (restricted unpickling) ------------------------------------------------------

def _numpy_array_builders() -> dict[tuple[str, str], object]:
    """The globals a pickled numpy array needs, under both numpy 1 and numpy 2 module names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray,
                                              ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        # Protocol 5 pickles (the default from Python 3.14) rebuild arrays from a buffer.
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    # Protocol 2 pickles written by Python 3 spell bytes as _codecs.encode(text, "latin1").
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays, lists, dicts, strings and numbers; refuses every other global.

    Code runs during unpickling only through globals found here, so refusing them all but the
    array builders means a hostile pickle cannot execute anything.
    """

    _allowed = _numpy_array_builders()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _RefusedGlobal("a persistent id")


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _restricted_unpickle(path: Path) -> object:
    try:
        with open(path, "rb") as handle:
            return _ArraysOnlyUnpickler(handle, encoding="bytes").load()
    except _RefusedGlobal as refused:
        raise AuditInputError(
            f"{path}: refused to unpickle {refused}: only numpy arrays, lists and dicts are allowed"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AuditInputError(f"{path}: not a readable CIFAR python batch ({reason})") from None


def _dict_entry(batch: dict, key: str):
    """Python 2 pickles (the CIFAR originals) have bytes keys; ones written by Python 3 may not."""
    return batch[key.encode()] if key.encode() in batch else batch.get(key)


def _open_cifar_pickle(path: Path, label_key: str) -> _Source:
    batch = _restricted_unpickle(path)
    if not isinstance(batch, dict):
        raise AuditInputError(f"{path}: not a CIFAR python batch (expected a dict)")
    data = _dict_entry(batch, "data")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _CIFAR_IMAGE_BYTES):
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise AuditInputError(
            f"{path}: 'data' must be a uint8 array of shape (N, {_CIFAR_IMAGE_BYTES}), found {found}"
        )
    labels = _checked_pickle_labels(_dict_entry(batch, label_key), len(data), path, label_key)
    images = data.reshape(-1, *_CIFAR_SAMPLE_SHAPE)
    return _Source(InMemoryArray(images), lambda: labels, [path])


def _checked_pickle_labels(raw, count: int, path: Path, key: str) -> np.ndarray:
    if raw is None:
        raise AuditInputError(f"{path}: no '{key}' in this CIFAR python batch")
    try:
        labels = np.asarray(raw)
    except (ValueError, TypeError):  # ragged or odd objects: not a list of labels
        labels = np.empty((0, 0))
    if count == 0 and labels.size == 0:
        return np.empty(0, np.int64)
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise AuditInputError(f"{path}: '{key}' must be {count} integer labels, one per image")
    return labels.astype(np.int64)


def _cifar_pickle_opener(label_key: str) -> Callable[[list[Path]], _Source]:
    def open_split(paths: list[Path]) -> _Source:
        parts = [_open_cifar_pickle(path, label_key) for path in paths]
        return _concatenate(parts, str(paths[0].parent))

    return open_split


# --- MNIST IDX ---------------------------------------------------------------------------------

def _idx_spellings(name: str) -> tuple[str, ...]:
    """Raw before gzipped (a raw file can be memory-mapped); both dash and dot spellings."""
    dotted = name.replace("-idx", ".idx")
    return (name, dotted, f"{name}.gz", f"{dotted}.gz")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The array of an IDX file with this magic number: memory-mapped if raw, else decompressed."""
    ndim = magic & 0xFF
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as handle:
                return _read_idx_stream(handle, path, magic, ndim, gzipped=True)
        except (OSError, EOFError, zlib.error):
            raise AuditInputError(f"{path}: not a readable gzip file (truncated or corrupt)") from None
    with open(path, "rb") as handle:
        return _read_idx_stream(handle, path, magic, ndim, gzipped=False)


def _read_idx_stream(handle, path: Path, magic: int, ndim: int, gzipped: bool) -> np.ndarray:
    header = handle.read(4 + 4 * ndim)
    if len(header) < 4 or struct.unpack(">I", header[:4])[0] != magic:
        found = f"0x{struct.unpack('>I', header[:4])[0]:08x}" if len(header) >= 4 else "none"
        raise AuditInputError(
            f"{path}: bad IDX magic number {found} (expected 0x{magic:08x}); not an MNIST "
            f"{'image' if ndim == 3 else 'label'} file"
        )
    if len(header) < 4 + 4 * ndim:
        raise AuditInputError(f"{path}: IDX file is truncated (incomplete header)")
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected = math.prod(dims)
    if gzipped:
        # Read no more than the header promises (plus one byte to detect trailing data).
        payload = _read_at_most(handle, expected + 1)
        _check_idx_size(path, dims, expected, len(payload))
        return np.frombuffer(payload, dtype=np.uint8).reshape(dims)
    size = path.stat().st_size - len(header)
    _check_idx_size(path, dims, expected, size)
    if expected == 0:
        return np.empty(dims, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=len(header), shape=dims)


def _read_at_most(handle, limit: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes, in chunks: memory grows with the data, not with a header's claim."""
    data = bytearray()
    while len(data) < limit:
        piece = handle.read(min(chunk, limit - len(data)))
        if not piece:
            break
        data += piece
    return bytes(data)


def _check_idx_size(path: Path, dims: tuple[int, ...], expected: int, actual: int) -> None:
    if actual < expected:
        raise AuditInputError(
            f"{path}: IDX file is truncated: the header promises {dims} = {expected} bytes of data, "
            f"the file holds {actual}"
        )
    if actual > expected:
        raise AuditInputError(
            f"{path}: IDX file is longer than its header {dims} says; corrupt or not an IDX file"
        )


def _open_idx_split(paths: list[Path]) -> _Source:
    images_path, labels_path = paths
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)
    if len(labels) != len(images):
        raise AuditInputError(
            f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}"
        )
    rows = InMemoryArray(images.reshape(len(images), 1, *images.shape[1:]))
    return _Source(rows, lambda: np.asarray(labels, dtype=np.int64), [images_path, labels_path])


# --- the folder formats, in the order they are tried --------------------------------------------

_LAYOUTS: tuple[_Layout, ...] = (
    _Layout("CIFAR-10 binary", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            ("test_batch.bin",), _cifar_binary_opener(label_bytes=1)),
    _Layout("CIFAR-100 binary", ("train.bin",), ("test.bin",), _cifar_binary_opener(label_bytes=2)),
    _Layout("CIFAR-10 python", tuple(f"data_batch_{i}" for i in range(1, 6)),
            ("test_batch",), _cifar_pickle_opener("labels")),
    _Layout("CIFAR-100 python", ("train",), ("test",), _cifar_pickle_opener("fine_labels")),
    _Layout("MNIST IDX", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), _open_idx_split, _idx_spellings),
)
