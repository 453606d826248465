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
a ``/`` or ``..`` is refused), and every listed file must exist. Images are decoded as image
folders' are (:mod:`auditor.sources.datasets.images`: Pillow's PNG and JPEG decoders only, the
header checked before the pixels are decoded) to RGB, and each must be 64×64. Pillow is the
optional extra ``images``. Every file read is an input, with its sha256 (an image folder's manifest
is defined for that layout, not this one).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import AuditInputError
from ..regular_files import read_input
from .image_folder import ImageFiles
from .images import IMAGE_SUFFIXES, ImageLayout
from .interface import FolderFormat, Rows
from .options import DataOptions
from .rows import concatenate

# Every image decoded to RGB at the set's own size: a grayscale JPEG becomes three equal planes,
# and an image of another size is refused, not resized.
LAYOUT = ImageLayout("RGB", (64, 64), resize=False)
# A class id or file name: letters, digits, '_', '-', '.', never a path of its own.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_INDEX_BYTES = 64 << 20  # wnids.txt and val_annotations.txt are well below this (≈ 0.3 MB)


def _index_lines(path: Path) -> list[str]:
    try:
        text = read_input(path, MAX_INDEX_BYTES, "a Tiny-ImageNet index file").decode("utf-8")
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
    listed = set(wnids)
    unlisted = sorted(child.name for child in train.iterdir() if child.is_dir() and child.name not in listed)
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
    return Rows(ImageFiles(paths, LAYOUT), lambda: label_array, [folder / "wnids.txt", *paths])


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
    return Rows(ImageFiles(paths, LAYOUT), lambda: label_array, [folder / "wnids.txt", annotations, *paths])


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

    def open(self, folder: Path, split: str, options: DataOptions) -> Rows:
        wnids = read_wnids(folder)
        if split == "train":
            return _train_split(folder, wnids)
        if split == "test":
            return _val_split(folder, wnids)
        return concatenate([_train_split(folder, wnids), _val_split(folder, wnids)], f"{folder} ({self.name})")
