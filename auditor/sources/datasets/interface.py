"""The seam for data sets: what a format hands the audit, and the two kinds of format.

A data format turns a path (a file, or a folder), a split and the reading options into
:class:`Rows` — a lazily read, row-sliceable array, its labels and the files it reads. File
formats are chosen by suffix, folder formats by the files a folder holds;
:mod:`auditor.sources.datasets.registry` lists them all explicitly. A new format is one class (one
module) and one line in the registry.

A format whose data has no train/test split of its own returns every row with ``split_rule=True``
whatever split was asked for; the registry then applies the file split rule
(:mod:`auditor.sources.datasets.split_rule`), the same for every such format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arrays import ArrayReader
from .options import DataOptions


@dataclass
class Rows:
    """Rows, labels and files of one split, before the limit is applied."""

    rows: ArrayReader
    labels: Callable[[], np.ndarray | None]
    files: list[Path]  # each recorded with its sha256
    # Image folders, each recorded as one input: the sha256 of its manifest (image_folder.manifest_sha256).
    image_folders: list[Path] = field(default_factory=list)
    split_rule: bool = False  # every row of data without its own split: the registry applies the rule


class FileFormat(ABC):
    """A data set stored in one file, recognised by its suffix."""

    name: str
    suffixes: tuple[str, ...]
    takes: frozenset[str] = frozenset()  # DataOptions fields it reads, besides test_every; others are refused

    @abstractmethod
    def open(self, path: Path, split: str, options: DataOptions) -> Rows:
        """The samples of ``split`` (train, test or all) of the file."""


class FolderFormat(ABC):
    """A data set laid out in a folder, recognised by the files it holds."""

    name: str
    takes: frozenset[str] = frozenset()  # DataOptions fields it reads, besides test_every; others are refused

    @abstractmethod
    def recognises(self, folder: Path) -> bool:
        """Whether ``folder`` holds a complete data set of this format."""

    def incomplete(self, folder: Path) -> str | None:
        """What is missing when ``folder`` holds part of this format (to name it in the error), else None."""
        return None

    @abstractmethod
    def open(self, folder: Path, split: str, options: DataOptions) -> Rows:
        """The samples of ``split`` (train, test or all: train followed by test)."""
