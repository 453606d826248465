"""One column of Arrow data (Parquet, Arrow IPC, ``save_to_disk``) as the samples of a data set.

A column's kind comes from its Arrow type (and, for Hugging Face's Array2D…5D, the extension name
``datasets`` tags the field with):

- **images**: a struct with a binary ``bytes`` field (Hugging Face's ``Image`` feature stores
  ``{bytes, path}``) or a binary column, decoded by :mod:`auditor.sources.datasets.images` into
  uint8 (N, C, H, W). A cell with a path but no bytes is refused: no other file is opened.
- **fixed-shape arrays**: fixed-size lists (nested), Arrow's ``fixed_shape_tensor`` and Hugging
  Face's ``Array2D`` … ``Array5D``: rows as stored, (N, *shape).
- **lists** of numbers, nested to any depth: read like arrays when ``--column`` names them, and
  every row must then have the shape of the first.

Values must be numbers (bool, integer or float); a missing (null) sample or value is refused.
**Default column**: the first image or fixed-shape array column, in schema order. **Labels**: the
``label_column`` option, else the one column that ``datasets`` describes as a ``ClassLabel``,
else an integer column named ``label`` or ``labels``, else none; integers without nulls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...certificate.json_input import parse_json
from ...errors import AuditInputError, printable
from .arrow_parts import ColumnCursor, Part, pyarrow
from .images import ImageLayout, decode_images, image_layout, read_header
from .interface import Rows
from .options import DataOptions

HF_ARRAY_TYPES = tuple(f"datasets.features.features.Array{n}DExtensionType" for n in range(2, 6))
SCAN_ROWS = 1024  # rows per read while looking at every image's header
# The features description that `datasets` writes into the schema: kilobytes, a few levels deep.
MAX_METADATA_BYTES, MAX_METADATA_DEPTH = 16 << 20, 64


def hf_features(schema) -> dict:
    """The ``features`` that ``datasets`` keeps in the schema metadata (key ``huggingface``), or {}."""
    raw = (schema.metadata or {}).get(b"huggingface", b"{}")
    try:
        features = parse_json(raw, "the schema's huggingface metadata", MAX_METADATA_BYTES, MAX_METADATA_DEPTH)["info"][
            "features"
        ]
    except (AuditInputError, KeyError, TypeError):
        return {}
    return features if isinstance(features, dict) else {}


def _extension_name(field) -> str:
    """The extension a field is tagged with: a registered type's name, or the name in its metadata."""
    name = getattr(field.type, "extension_name", None)
    if name is None:
        name = (field.metadata or {}).get(b"ARROW:extension:name", b"").decode("utf-8", "replace")
    return name


def _is_list(pa, type_) -> bool:
    return pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_)


def column_kind(pa, field) -> str | None:
    """``image``, ``array`` (fixed shape), ``list`` (shape fixed by the rows) or None (not samples)."""
    type_ = field.type
    if isinstance(type_, pa.FixedShapeTensorType):
        return "array"
    if isinstance(type_, pa.BaseExtensionType):
        type_ = type_.storage_type
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        return "image"
    if pa.types.is_struct(type_) and type_.get_field_index("bytes") >= 0:
        inner = type_.field(type_.get_field_index("bytes")).type
        return "image" if pa.types.is_binary(inner) or pa.types.is_large_binary(inner) else None
    if not _is_list(pa, type_):
        return None
    fixed = True
    while _is_list(pa, type_):
        fixed = fixed and pa.types.is_fixed_size_list(type_)
        type_ = type_.value_type
    if not (pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_)):
        return None
    return "array" if fixed or _extension_name(field) in HF_ARRAY_TYPES else "list"


def _columns(schema) -> str:
    return ", ".join(f"{printable(field.name)} ({printable(field.type)})" for field in schema)


def _field(schema, name: str, where: str, what: str):
    found = schema.get_all_field_indices(name)
    if not found:
        raise AuditInputError(f"{where}: no {what} {printable(name)!r} (columns: {_columns(schema)})")
    if len(found) > 1:
        raise AuditInputError(f"{where}: several columns are named {printable(name)!r}")
    return schema.field(found[0])


def choose_column(pa, schema, column: str | None, where: str) -> tuple[str, str]:
    """The samples' column and its kind: ``column`` if given, else the first image or fixed-shape array column."""
    if column is not None:
        field = _field(schema, column, where, "column")
        kind = column_kind(pa, field)
        if kind is None:
            raise AuditInputError(
                f"{where}: column {printable(column)!r} has type {printable(field.type)}: neither images "
                f"(binary, or a struct with binary bytes) nor arrays of numbers"
            )
        return column, kind
    for field in schema:
        kind = column_kind(pa, field)
        if kind in ("image", "array"):
            _field(schema, field.name, where, "column")  # refuses a name that two columns share
            return field.name, kind
    raise AuditInputError(
        f"{where}: no image or fixed-shape array column (columns: {_columns(schema)}); name the samples' column with --column"
    )


def choose_labels(pa, schema, label_column: str | None, where: str) -> str | None:
    """The labels' column (see the module docstring), or None."""

    def integers(name: str) -> bool:
        return len(schema.get_all_field_indices(name)) == 1 and pa.types.is_integer(schema.field(name).type)

    if label_column is not None:
        field = _field(schema, label_column, where, "label column")
        if not pa.types.is_integer(field.type):
            raise AuditInputError(
                f"{where}: label column {printable(label_column)!r} has type {printable(field.type)}; labels must be integers"
            )
        return label_column
    features = hf_features(schema)
    class_labels = [
        name for name, feature in features.items() if isinstance(feature, dict) and feature.get("_type") == "ClassLabel"
    ]
    if len(class_labels) == 1 and integers(class_labels[0]):
        return class_labels[0]
    return next((name for name in ("label", "labels") if integers(name)), None)


def _array_rows(pa, array, rows: np.ndarray, where: str) -> np.ndarray:
    """Arrow arrays of numbers, one per row, as one numpy array (len(rows), *shape)."""
    if array.null_count:
        missing = rows[int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])]
        raise AuditInputError(f"{where}, row {missing}: the sample is missing (null)")
    if isinstance(array.type, pa.FixedShapeTensorType):
        return array.to_numpy_ndarray()
    if isinstance(array.type, pa.BaseExtensionType):
        array = array.storage
    dims, values = [], array
    while _is_list(pa, values.type):
        if pa.types.is_fixed_size_list(values.type):
            dims.append(values.type.list_size)
        elif len(values):
            low, high = (scalar.as_py() for scalar in pa.compute.min_max(pa.compute.list_value_length(values)).values())
            if low != high:
                raise AuditInputError(
                    f"{where}, rows {rows[0]}-{rows[-1]}: samples of different shapes (lengths {low} to {high} at depth {len(dims) + 1})"
                )
            dims.append(low)
        else:
            dims.append(0)
        values = values.flatten()
        if values.null_count:
            raise AuditInputError(f"{where}, rows {rows[0]}-{rows[-1]}: missing (null) values inside samples")
    return values.to_numpy(zero_copy_only=False).reshape(len(array), *dims)


def _image_cells(pa, array, rows: np.ndarray, where: str) -> list[bytes]:
    """Each row's image bytes (the ``bytes`` field of a struct column, or the binary cell)."""
    paths: list = [None] * len(array)
    if pa.types.is_struct(array.type):
        children = dict(zip((field.name for field in array.type), array.flatten()))
        cells = children["bytes"].to_pylist()
        if "path" in children and (
            pa.types.is_string(children["path"].type) or pa.types.is_large_string(children["path"].type)
        ):
            paths = children["path"].to_pylist()
        missing = [i for i, valid in enumerate(array.is_valid().to_pylist()) if not valid]
    else:
        cells, missing = array.to_pylist(), []
    missing += [i for i, cell in enumerate(cells) if cell is None]
    if missing:
        i = min(missing)
        where_else = f" (only a path, {printable(paths[i])!r}: other files are not opened)" if paths[i] else ""
        raise AuditInputError(f"{where}, row {rows[i]}: no image bytes{where_else}")
    return cells


def _joined(pa, pieces: list):
    return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def scan_layout(cursor: ColumnCursor, where: str, image_size: tuple[int, int] | None) -> ImageLayout:
    """The layout of every image of the column, from their headers (read in batches, not kept)."""
    pa = pyarrow()

    def headers():
        for start in range(0, cursor.num_rows, SCAN_ROWS):
            rows = np.arange(start, min(start + SCAN_ROWS, cursor.num_rows))
            for row, cell in zip(rows, _image_cells(pa, _joined(pa, cursor.read(start, rows[-1] + 1)), rows, where)):
                yield f"{where}, row {row}", read_header(cell, f"{where}, row {row}")

    return image_layout(headers(), image_size)


class ColumnRows:
    """One column as rows: arrays as stored, or images decoded to uint8 (N, C, H, W)."""

    def __init__(self, cursor: ColumnCursor, where: str, layout: ImageLayout | None):
        """``layout``: how the column's images are decoded; None for a column of arrays."""
        self._cursor, self._where, self._layout = cursor, where, layout
        if layout is not None:
            sample_shape: tuple[int, ...] = layout.sample_shape
            self.dtype = np.dtype(np.uint8)
        else:
            first = self._converted(np.arange(min(1, cursor.num_rows)))
            sample_shape, self.dtype = first.shape[1:], first.dtype
        self.shape = (cursor.num_rows, *sample_shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.read_picked(np.arange(max(0, start), min(stop, self.shape[0])))

    def read_picked(self, indices: np.ndarray) -> np.ndarray:
        if len(indices) == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)
        rows = self._converted(indices)
        if rows.shape[1:] != self.shape[1:]:
            raise AuditInputError(
                f"{self._where}, rows {indices[0]}-{indices[-1]}: samples of shape {list(rows.shape[1:])}, "
                f"the first row's is {list(self.shape[1:])}"
            )
        return rows if rows.flags.owndata and rows.flags.c_contiguous else np.array(rows, order="C", copy=True)

    def _converted(self, indices: np.ndarray) -> np.ndarray:
        pa = pyarrow()
        if len(indices) == 0:
            raise AuditInputError(f"{self._where}: no rows")
        first = int(indices[0])
        raw = _joined(pa, self._cursor.read(first, int(indices[-1]) + 1))
        if len(raw) != len(indices):
            raw = raw.take(pa.array(indices - first))
        if self._layout is None:
            return _array_rows(pa, raw, indices, self._where)
        cells = _image_cells(pa, raw, indices, self._where)
        named = ((cell, f"{self._where}, row {row}") for cell, row in zip(cells, indices))
        return decode_images(named, len(cells), self._layout)


def _labels(parts: Sequence[Part], column: str, where: str) -> np.ndarray:
    pa = pyarrow()
    pieces = []
    try:
        for part in parts:
            values = part.whole_column(column)
            if values.null_count:
                raise AuditInputError(f"{where}: label column {printable(column)!r} has missing (null) labels")
            pieces.append(values.to_numpy().astype(np.int64))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise AuditInputError(f"{where}: cannot read the label column ({str(error).splitlines()[0][:200]})") from None
    finally:
        for part in parts:
            part.release()
    return np.concatenate(pieces) if pieces else np.empty(0, np.int64)


def arrow_rows(
    parts: Sequence[Part],
    every_part: Sequence[Part],
    files: list[Path],
    options: DataOptions,
    where: str,
    split_rule: bool,
) -> Rows:
    """Rows of ``parts`` (one split of a data set whose parts are ``every_part``), with ``files``
    to record. Every part must have the same columns; the image layout is that of every part."""
    pa = pyarrow()
    schema = every_part[0].schema
    for part in every_part[1:]:
        if not part.schema.equals(schema, check_metadata=False):
            raise AuditInputError(
                f"{printable(part.path)}: columns differ from those of {printable(every_part[0].path)}"
            )
    column, kind = choose_column(pa, schema, options.column, where)
    if options.image_size is not None and kind != "image":
        raise AuditInputError(f"--image-size resizes images, but column {printable(column)!r} of {where} holds arrays")
    label_column = choose_labels(pa, schema, options.label_column, where)
    column_where = f"{where}, column {printable(column)!r}"
    if not any(part.num_rows for part in parts):
        raise AuditInputError(f"{where}: no rows")
    layout = (
        scan_layout(ColumnCursor(every_part, column), column_where, options.image_size) if kind == "image" else None
    )
    rows = ColumnRows(ColumnCursor(parts, column), column_where, layout)
    labels = (lambda: _labels(parts, label_column, where)) if label_column is not None else (lambda: None)
    return Rows(rows, labels, files, split_rule=split_rule)
