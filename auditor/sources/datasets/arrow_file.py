"""``FILE.parquet`` and ``FILE.arrow``: one file of an Arrow table with a column of samples.

A Parquet file is read row group by row group; an ``.arrow`` file (Arrow IPC, the file or the
stream format) is memory-mapped and read batch by batch (:mod:`auditor.sources.datasets.arrow_parts`).
The column, the labels and image decoding: :mod:`auditor.sources.datasets.arrow_columns`. Rows
are in file order. Such a file has no split of its own: the file split rule applies. (A shard of
a ``datasets.save_to_disk`` folder is an ``.arrow`` file, but give the folder: it orders the shards.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...errors import printable
from .arrow_columns import arrow_rows
from .arrow_parts import Part
from .interface import FileFormat, Rows
from .options import DataOptions


class ArrowTableFile(FileFormat):
    """A file format read through pyarrow: ``open_part`` reads the file's schema and row counts."""

    takes = frozenset({"image_size", "column", "label_column"})

    def __init__(self, name: str, suffixes: tuple[str, ...], open_part: Callable[[Path], Part]):
        self.name, self.suffixes, self._open_part = name, suffixes, open_part

    def open(self, path: Path, split: str, options: DataOptions) -> Rows:
        part = self._open_part(path)
        return arrow_rows([part], [part], [path], options, printable(path), split_rule=True)
