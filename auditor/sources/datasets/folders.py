"""Folders: recognising which data set format a folder holds, and the fixed-file-name layouts.

A folder is recognised by the files it holds, whatever its name (``cifar-10-batches-bin``,
``cifar-100-python``, ``MNIST/raw`` …). When the folder itself holds no data set but exactly one
of its subfolders (or a subfolder's ``raw`` folder, as torchvision lays MNIST out) does, that one
is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import AuditInputError
from .interface import FolderFormat, Rows
from .options import DataOptions
from .rows import concatenate


class FixedFilesLayout(FolderFormat):
    """A folder format with fixed file names for each split (CIFAR, MNIST): the files, and how to
    open one split's files. ``spellings`` lists the names a file may have on disk."""

    def __init__(
        self,
        name: str,
        train: tuple[str, ...],
        test: tuple[str, ...],
        open_split: Callable[[list[Path]], Rows],
        spellings: Callable[[str], tuple[str, ...]] = lambda name: (name,),
    ):
        self.name, self.train, self.test = name, train, test
        self.open_split, self.spellings = open_split, spellings

    def find(self, folder: Path, name: str) -> Path | None:
        for spelling in self.spellings(name):
            if (folder / spelling).is_file():
                return folder / spelling
        return None

    def missing(self, folder: Path) -> list[str]:
        return [name for name in self.train + self.test if self.find(folder, name) is None]

    def files(self, folder: Path, split: str) -> list[Path]:
        names = {"train": self.train, "test": self.test, "all": self.train + self.test}[split]
        return [path for path in (self.find(folder, name) for name in names) if path is not None]

    def recognises(self, folder: Path) -> bool:
        return not self.missing(folder)

    def incomplete(self, folder: Path) -> str | None:
        missing = self.missing(folder)
        if 0 < len(missing) < len(self.train + self.test):
            return f"incomplete {self.name} folder: missing {', '.join(missing)}"
        return None

    def open(self, folder: Path, split: str, options: DataOptions) -> Rows:
        if split == "all":
            parts = [self.open_split(self.files(folder, "train")), self.open_split(self.files(folder, "test"))]
            return concatenate(parts, f"{folder} ({self.name})")
        return self.open_split(self.files(folder, split))


def recognise_folder(folder: Path, formats: Sequence[FolderFormat]) -> tuple[Path, FolderFormat]:
    """The folder (this one, or one subfolder) and format of the data set it holds."""
    own = [layout for layout in formats if layout.recognises(folder)]
    if len(own) == 1:
        return folder, own[0]
    if len(own) > 1:
        raise AuditInputError(
            f"{folder}: holds several data sets ({', '.join(layout.name for layout in own)}); move one to its own folder"
        )
    found = [(sub, layout) for sub in _subfolders(folder) for layout in formats if layout.recognises(sub)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        listing = ", ".join(f"{sub} ({layout.name})" for sub, layout in found)
        raise AuditInputError(f"{folder}: holds several data sets: {listing}; name one of them")
    raise _unrecognised(folder, formats)


def _subfolders(folder: Path) -> list[Path]:
    children = sorted(child for child in folder.iterdir() if child.is_dir())
    return children + [child / "raw" for child in children if (child / "raw").is_dir()]


def _unrecognised(folder: Path, formats: Sequence[FolderFormat]) -> AuditInputError:
    # A partly present layout is most likely what the user meant: name what it misses.
    for layout in formats:
        problem = layout.incomplete(folder)
        if problem is not None:
            return AuditInputError(f"{folder}: {problem}")
    return AuditInputError(
        f"{folder}: no recognisable data set in this folder (expected one of: {', '.join(layout.name for layout in formats)})"
    )
