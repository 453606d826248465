"""Tiny-ImageNet-200 in its own folder layout: 64×64 JPEGs, decoded with Pillow as they are read.

    tiny-imagenet-200/
        wnids.txt                               one class id (WordNet id) per line, 200 of them
        train/<wnid>/images/<wnid>_<i>.JPEG     500 training images per class
        val/images/val_<i>.JPEG                 10,000 held-out images
        val/val_annotations.txt                 <file name> TAB <wnid> TAB <box …>, one line per image
        test/images/test_<i>.JPEG               unlabelled: not read

Splits: **train** is ``train/``, **test** is ``val/`` (the labelled held-out split; ``test/`` has
no labels), **all** is train followed by val. The order is fixed: classes by sorted wnid (a label
is the class's index in that order), files by sorted name within a class; val files by sorted
name. Samples are (3, 64, 64) uint8 (channel, row, column), like CIFAR's; the set's grayscale
JPEGs become three equal planes. Images are decoded batch by batch, so memory stays flat in N.

Every name the index files give is checked before it becomes a path (a class id or file name with
a ``/`` or ``..`` is refused), every listed file must exist, and every image must be a 64×64 JPEG:
Pillow is asked for its JPEG decoder only, and the size is read from the header before decoding.
Pillow is an optional dependency (``pip install 'vae-audit[images]'``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import AuditInputError
from .interface import FolderFormat, Rows
from .rows import concatenate

SAMPLE_SHAPE = (3, 64, 64)
IMAGE_SIZE = (64, 64)  # Pillow's (width, height)
IMAGE_SUFFIXES = (".jpeg", ".jpg")
# A class id or file name: letters, digits, '_', '-', '.', never a path of its own.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_INDEX_BYTES = 64 << 20  # wnids.txt and val_annotations.txt are well below this (≈ 0.3 MB)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise AuditInputError(
            "reading Tiny-ImageNet needs Pillow: pip install 'vae-audit[images]' (or pip install Pillow)"
        ) from None
    return Image


class JpegRows:
    """Rows of 64×64 images, one JPEG file per row, decoded when read."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.shape = (len(paths), *SAMPLE_SHAPE)
        self.dtype = np.dtype(np.uint8)

    def read(self, start: int, stop: int) -> np.ndarray:
        image_module = _pillow()
        paths = self.paths[max(0, start) : stop]
        out = np.empty((len(paths), *SAMPLE_SHAPE), np.uint8)
        for i, path in enumerate(paths):
            out[i] = _decode(image_module, path)
        return out


def _decode(image_module, path: Path) -> np.ndarray:
    try:
        with image_module.open(path, formats=["JPEG"]) as image:
            if image.size != IMAGE_SIZE:
                width, height = image.size
                raise AuditInputError(f"{path}: image is {width}×{height}; Tiny-ImageNet images are 64×64")
            rgb = np.asarray(image.convert("RGB"))
    except AuditInputError:
        raise
    except (OSError, SyntaxError, ValueError, image_module.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise AuditInputError(f"{path}: not a readable JPEG image ({reason})") from None
    return rgb.transpose(2, 0, 1)


def _index_lines(path: Path) -> list[str]:
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise AuditInputError(f"{path}: {size} bytes is far more than a Tiny-ImageNet index file holds")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise AuditInputError(f"{path}: not a text file (not UTF-8)") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _checked_name(name: str, path: Path, what: str) -> str:
    if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise AuditInputError(f"{path}: {what} {name[:80]!r} is not a plain name (letters, digits, '_', '-', '.')")
    return name


def read_wnids(folder: Path) -> list[str]:
    """The class ids of ``wnids.txt``, sorted (the label order)."""
    path = folder / "wnids.txt"
    wnids = [_checked_name(line, path, "class id") for line in _index_lines(path)]
    if not wnids:
        raise AuditInputError(f"{path}: lists no classes")
    if len(set(wnids)) != len(wnids):
        raise AuditInputError(f"{path}: lists a class id more than once")
    return sorted(wnids)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _train_split(folder: Path, wnids: list[str]) -> Rows:
    train = folder / "train"
    unlisted = sorted(child.name for child in train.iterdir() if child.is_dir() and child.name not in set(wnids))
    if unlisted:
        raise AuditInputError(f"{train}: holds class folders that wnids.txt does not list ({', '.join(unlisted[:3])})")
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        images = train / wnid / "images"
        if not images.is_dir():
            raise AuditInputError(f"{images}: missing (wnids.txt lists class {wnid})")
        found = _images_in(images)
        paths += found
        labels += [label] * len(found)
    label_array = np.array(labels, dtype=np.int64)
    return Rows(JpegRows(paths), lambda: label_array, [folder / "wnids.txt", *paths])


def _val_split(folder: Path, wnids: list[str]) -> Rows:
    annotations = folder / "val" / "val_annotations.txt"
    images = folder / "val" / "images"
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    labelled: dict[str, int] = {}
    for number, line in enumerate(_index_lines(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise AuditInputError(f"{annotations}: line {number} is not '<file name> TAB <class id> …'")
        name = _checked_name(fields[0], annotations, "file name")
        wnid = _checked_name(fields[1], annotations, "class id")
        if wnid not in label_of:
            raise AuditInputError(f"{annotations}: line {number} names class {wnid!r}, which wnids.txt does not list")
        if name in labelled:
            raise AuditInputError(f"{annotations}: {name} is listed more than once")
        labelled[name] = label_of[wnid]
    on_disk = {path.name for path in _images_in(images)}
    missing, unlabelled = sorted(set(labelled) - on_disk), sorted(on_disk - set(labelled))
    if missing:
        raise AuditInputError(f"{images}: {missing[0]} is listed in val_annotations.txt but not there")
    if unlabelled:
        raise AuditInputError(f"{images}: {unlabelled[0]} has no line in val_annotations.txt")
    names = sorted(labelled)
    paths = [images / name for name in names]
    label_array = np.array([labelled[name] for name in names], dtype=np.int64)
    return Rows(JpegRows(paths), lambda: label_array, [folder / "wnids.txt", annotations, *paths])


class TinyImageNet(FolderFormat):
    name = "Tiny-ImageNet-200"
    _needs = ("wnids.txt", "train", "val/images", "val/val_annotations.txt")

    def _missing(self, folder: Path) -> list[str]:
        kinds = {"wnids.txt": Path.is_file, "val/val_annotations.txt": Path.is_file}
        return [name for name in self._needs if not kinds.get(name, Path.is_dir)(folder / name)]

    def recognises(self, folder: Path) -> bool:
        return not self._missing(folder)

    def incomplete(self, folder: Path) -> str | None:
        missing = self._missing(folder)
        if (folder / "wnids.txt").is_file() and missing:
            return f"incomplete {self.name} folder: missing {', '.join(missing)}"
        return None

    def open(self, folder: Path, split: str) -> Rows:
        wnids = read_wnids(folder)
        if split == "train":
            return _train_split(folder, wnids)
        if split == "test":
            return _val_split(folder, wnids)
        return concatenate([_train_split(folder, wnids), _val_split(folder, wnids)], f"{folder} ({self.name})")
