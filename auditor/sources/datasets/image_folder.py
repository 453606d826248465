"""Image folders: PNG and JPEG files in one sub-folder per class; the class is the label.

Two layouts, recognised whatever the folder is called:

- ``ROOT/<class>/<image>``: no split of its own, so the file split rule applies
  (:mod:`auditor.sources.datasets.split_rule`);
- ``ROOT/train/<class>/<image>`` and ``ROOT/test/<class>/<image>``: the split; ``all`` is train
  followed by test. Other sub-folders of ROOT (``val/`` …) are not read.

Images sit directly in their class folder and are named ``*.png``, ``*.jpg`` or ``*.jpeg`` (any
case). Entries whose names start with "." (``.DS_Store``, ``._x.jpg``, ``.ipynb_checkpoints``) are
skipped and other files ignored; a class folder without images is an error, so that no class
index shifts silently. **Order**: classes sorted by name (Unicode code points), then each class's
files sorted by name; the label is the class's index among the sorted class names (of train and
test together). The order depends on the names alone, so two views of the same samples kept
under the same names (a teacher's view and an encoder's view) line up row by row.

Decoding: :mod:`auditor.sources.datasets.images`. The data set is one input of the certificate:
the folder, with the sha256 of its **manifest**, the lines ``<sha256 of the file>  <path relative
to ROOT>`` of every image in reading order, train before test, exactly as GNU ``sha256sum``
prints them (a newline after each; names with a backslash or a line break escaped).
:func:`manifest_sha256` computes it, for the audit and for ``audit verify``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from ...errors import printable
from ..hashing import file_sha256
from .images import IMAGE_SUFFIXES, ImageLayout, decode_images, image_layout, read_header
from .interface import FolderFormat, Rows
from .options import DataOptions

SPLIT_FOLDERS = ("train", "test")


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return [entry for entry in entries if _visible(entry.name)]
    except OSError:
        return []


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in _entries(folder) if entry.is_dir())


def _image_names(folder: Path) -> list[str]:
    return sorted(
        entry.name for entry in _entries(folder) if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file()
    )


def _class_layout_problem(folder: Path) -> str | None:
    """Why ``folder`` is not ``<class>/<image>``, or None when it is."""
    loose = _image_names(folder)
    if loose:
        return (
            f"{printable(folder / loose[0])}: images directly in the folder; an image folder holds one "
            f"sub-folder of images per class (for images without classes, give the folder above it: one class)"
        )
    classes = _class_folders(folder)
    if not classes:
        return f"{printable(folder)}: no class sub-folders"
    for name in classes:
        if not _image_names(folder / name):
            return f"class folder {printable(folder / name)} holds no PNG or JPEG images"
    return None


def _has_split_folders(folder: Path) -> bool:
    return all(_class_layout_problem(folder / name) is None for name in SPLIT_FOLDERS)


def image_listing(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """(path relative to ``folder``, class) of every image in reading order, by split: ``train``
    and ``test`` for the split layout, ``all`` otherwise. Never raises on an odd folder, which
    simply lists fewer images (``audit verify`` then finds a different manifest)."""
    if _has_split_folders(folder):
        return {name: _class_images(folder / name, f"{name}/") for name in SPLIT_FOLDERS}
    return {"all": _class_images(folder, "")}


def _class_images(folder: Path, prefix: str) -> list[tuple[str, str]]:
    return [
        (f"{prefix}{name}/{image}", name) for name in _class_folders(folder) for image in _image_names(folder / name)
    ]


def manifest_sha256(folder: str | os.PathLike, cancelled: threading.Event | None = None) -> str:
    """The sha256 of the folder's image manifest (see the module docstring); "" when cancelled."""
    folder = Path(folder)
    manifest = hashlib.sha256()
    for relative, _ in (image for part in image_listing(folder).values() for image in part):
        digest = file_sha256(folder / relative, cancelled=cancelled)
        if cancelled is not None and cancelled.is_set():
            return ""
        # Names that are not UTF-8 (Linux allows any bytes) go in as their bytes, as sha256sum prints them.
        manifest.update(_manifest_line(digest, relative).encode("utf-8", "surrogateescape"))
    return manifest.hexdigest()


def _manifest_line(digest: str, relative: str) -> str:
    """One line as GNU ``sha256sum`` (coreutils 9) prints it: a name holding a backslash, newline
    or carriage return is escaped and the line marked with a leading backslash, so that no name
    can pass for several lines."""
    escaped = relative.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    marker = "\\" if escaped != relative else ""
    return f"{marker}{digest}  {escaped}\n"


class ImageFiles:
    """Image files as rows of uint8 (N, C, H, W), each decoded when its row is read."""

    def __init__(self, paths: list[Path], layout: ImageLayout):
        self._paths, self._layout = paths, layout
        self.shape = (len(paths), *layout.sample_shape)
        self.dtype = np.dtype(np.uint8)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.read_picked(np.arange(max(0, start), min(stop, len(self._paths))))

    def read_picked(self, indices: np.ndarray) -> np.ndarray:
        chosen = [self._paths[int(i)] for i in indices]
        return decode_images(((path, printable(path)) for path in chosen), len(chosen), self._layout)


class ImageFolder(FolderFormat):
    name = "image folder"
    takes = frozenset({"image_size"})

    def recognises(self, folder: Path) -> bool:
        return _has_split_folders(folder) or _class_layout_problem(folder) is None

    def incomplete(self, folder: Path) -> str | None:
        # Only a folder with images at the first or second level looks like a broken image folder.
        looks_like = _image_names(folder) or any(_image_names(folder / name) for name in _class_folders(folder))
        return _class_layout_problem(folder) if looks_like else None

    def open(self, folder: Path, split: str, options: DataOptions) -> Rows:
        parts = image_listing(folder)
        every = [image for part in parts.values() for image in part]
        # One layout for the whole data set, whichever split is read, so that every split of it has
        # the same channels and size.
        headers = (
            (printable(folder / path), read_header(folder / path, printable(folder / path))) for path, _ in every
        )
        layout = image_layout(headers, options.image_size)
        classes = {name: index for index, name in enumerate(sorted({name for _, name in every}))}
        chosen = (
            parts["all"] if "all" in parts else [*parts["train"], *parts["test"]] if split == "all" else parts[split]
        )
        labels = np.array([classes[name] for _, name in chosen], dtype=np.int64)
        rows = ImageFiles([folder / path for path, _ in chosen], layout)
        return Rows(rows, lambda: labels, [], image_folders=[folder], split_rule="all" in parts)
