"""``datasets.save_to_disk`` folders, read with pyarrow alone (``datasets`` is never imported).

- **A Dataset**: ``state.json``, whose ``_data_files`` list the shards in row order,
  ``dataset_info.json``, and the shards (``data-00000-of-00002.arrow`` …, Arrow IPC streams). It
  has no split of its own: the file split rule applies.
- **A DatasetDict**: ``dataset_dict.json`` (``{"splits": [...]}``) and one Dataset folder per
  split. Its ``train`` and ``test`` splits are the split (``all``: train followed by test; other
  splits are not read); a DatasetDict of one split is read as that Dataset. Any other DatasetDict:
  give one split's folder.

A Dataset saved with an indices mapping (``select``, ``shuffle`` … without ``flatten_indices()``)
is refused: its rows are not the shards' rows in order. The column, labels and image decoding:
:mod:`auditor.sources.datasets.arrow_columns`. The certificate records every shard and the JSON
files that name and order them (``state.json``, ``dataset_dict.json``).
"""

from __future__ import annotations

from pathlib import Path

from ...certificate.json_input import parse_json
from ...errors import AuditInputError, printable
from ..regular_files import read_input
from .arrow_columns import arrow_rows
from .arrow_parts import IpcPart
from .interface import FolderFormat, Rows
from .options import DataOptions

STATE, INFO, DICT = "state.json", "dataset_info.json", "dataset_dict.json"
MAX_JSON_BYTES = 16 << 20  # these files list shards and splits: kilobytes, never more than this
MAX_JSON_DEPTH = 64  # they nest features a few levels deep


def _json(path: Path) -> object:
    return parse_json(
        read_input(path, MAX_JSON_BYTES, "a datasets JSON file"), printable(path), MAX_JSON_BYTES, MAX_JSON_DEPTH
    )


def _plain_name(value: object) -> bool:
    """A file or folder name inside the folder: no path, no '..', nothing hidden."""
    return isinstance(value, str) and bool(value) and Path(value).name == value and not value.startswith(".")


def _is_dataset(folder: Path) -> bool:
    return (folder / STATE).is_file() and (folder / INFO).is_file()


def _shards(folder: Path) -> list[Path]:
    """The shards of one saved Dataset, in row order, as its ``state.json`` lists them."""
    state = _json(folder / STATE)
    files = state.get("_data_files") if isinstance(state, dict) else None
    if (
        not isinstance(state, dict)
        or not isinstance(files, list)
        or not all(isinstance(entry, dict) for entry in files)
    ):
        raise AuditInputError(f"{printable(folder / STATE)}: no '_data_files' list of shards")
    if state.get("_indices_data_files"):
        raise AuditInputError(
            f"{printable(folder)}: saved with an indices mapping (after select, shuffle or filter); "
            f"save it again after dataset.flatten_indices()"
        )
    names = [entry.get("filename") for entry in files]
    for name in names:
        if not _plain_name(name):
            raise AuditInputError(
                f"{printable(folder / STATE)}: shard name {printable(name)!r} is not a file name in the folder"
            )
        if not (folder / str(name)).is_file():
            raise AuditInputError(f"{printable(folder / str(name))}: shard listed in state.json is missing")
    return [folder / str(name) for name in names]


def _splits(folder: Path) -> list[str]:
    record = _json(folder / DICT)
    splits = record.get("splits") if isinstance(record, dict) else None
    if not isinstance(splits, list) or not splits or not all(_plain_name(name) for name in splits):
        raise AuditInputError(f"{printable(folder / DICT)}: no 'splits' list of split folder names")
    for name in splits:
        if not _is_dataset(folder / name):
            raise AuditInputError(f"{printable(folder / name)}: split listed in {DICT} is not a saved Dataset folder")
    return splits


class SavedDataset(FolderFormat):
    name = "datasets.save_to_disk folder"
    takes = frozenset({"image_size", "column", "label_column"})

    def recognises(self, folder: Path) -> bool:
        return _is_dataset(folder) or (folder / DICT).is_file()

    def incomplete(self, folder: Path) -> str | None:
        if (folder / STATE).is_file() and not (folder / INFO).is_file():
            return f"a datasets.save_to_disk folder without {INFO}"
        return None

    def open(self, folder: Path, split: str, options: DataOptions) -> Rows:
        if not (folder / DICT).is_file():
            return self._dataset(folder, options, [])
        splits = _splits(folder)
        if len(splits) == 1:
            return self._dataset(folder / splits[0], options, [folder / DICT])
        if not {"train", "test"} <= set(splits):
            raise AuditInputError(
                f"{printable(folder)}: a DatasetDict of splits {', '.join(splits)}, without both train and test; "
                f"give one split's folder (e.g. {printable(folder / splits[0])}), whose rows the file split rule divides"
            )
        shards = {name: _shards(folder / name) for name in ("train", "test")}
        every = {name: [IpcPart(path) for path in paths] for name, paths in shards.items()}
        chosen = [part for name in (("train", "test") if split == "all" else (split,)) for part in every[name]]
        files = [folder / DICT, *(folder / name / STATE for name in shards), *shards["train"], *shards["test"]]
        return arrow_rows(
            chosen, [*every["train"], *every["test"]], files, options, printable(folder), split_rule=False
        )

    def _dataset(self, folder: Path, options: DataOptions, listing: list[Path]) -> Rows:
        shards = _shards(folder)
        if not shards:
            raise AuditInputError(f"{printable(folder)}: state.json lists no shards")
        parts = [IpcPart(path) for path in shards]
        return arrow_rows(
            parts, parts, [*listing, folder / STATE, *shards], options, printable(folder), split_rule=True
        )
