"""Arrow data files read batch by batch: Parquet files and Arrow IPC files, and one column of
several of them read as one (:class:`ColumnCursor`), with memory flat in the number of rows.

pyarrow is the optional extra ``arrow``, imported only when such data are read (``datasets`` is
never imported).

- **Parquet** is read with ``pre_buffer=False``: pyarrow's default (``True``) reads the column
  chunks of every row group asked for up front, which for a whole pass is the whole column (a
  prototype held 262 MiB for a 247 MiB file; streaming reads of 1 MiB held 17 MiB).
- **Arrow IPC** (the file format, and the stream format ``datasets.save_to_disk`` writes) is
  memory-mapped and read without copying; after each read the map's pages are released from the
  process (they stay in the page cache), as for Fortran-ordered ``.npy`` files.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import AuditInputError
from ..arrays import release_pages
from ..regular_files import open_input

PARQUET_BATCH_ROWS = 1024  # rows per batch pyarrow decodes from a Parquet row group


def pyarrow() -> Any:
    """The ``pyarrow`` module (with ``pyarrow.compute``), or a one-line error naming the extra."""
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401  # the list-length checks of nested arrays
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise AuditInputError("reading Parquet and Arrow data needs pyarrow: pip install 'vae-audit[arrow]'") from None
    return pyarrow


def arrow_failure(path: Path, what: str, error: Exception) -> AuditInputError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return AuditInputError(f"{path}: not a readable {what} ({reason[:200]})")


class ParquetPart:
    """A Parquet file: its schema, row count, and one column's batches from any row on."""

    def __init__(self, path: Path):
        self.path = path
        pa = pyarrow()
        try:
            opened = pa.parquet.ParquetFile(path)
            metadata, self.schema = opened.metadata, opened.schema_arrow
            self._group_rows = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        except (pa.ArrowException, OSError, ValueError) as error:
            raise arrow_failure(path, "Parquet file", error) from None
        self.num_rows = int(sum(self._group_rows))

    def _file(self):
        return pyarrow().parquet.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)

    def batches_from(self, column: str, row: int) -> tuple[int, Iterator]:
        """(the first row of the first batch, that batch and the ones after it) of ``column``."""
        starts = np.cumsum([0, *self._group_rows])
        group = int(np.searchsorted(starts, row, side="right") - 1)
        batches = self._file().iter_batches(
            batch_size=PARQUET_BATCH_ROWS,
            row_groups=list(range(group, len(self._group_rows))),
            columns=[column],
            use_threads=False,
        )
        return int(starts[group]), (batch.column(0) for batch in batches)

    def whole_column(self, column: str):
        return self._file().read(columns=[column], use_threads=False).column(0)

    def release(self) -> None:
        pass  # read through buffers of its own, freed with each batch


class IpcPart:
    """An Arrow IPC file or stream, memory-mapped: schema, row count and one column's batches."""

    def __init__(self, path: Path):
        self.path = path
        pa = pyarrow()
        try:
            with open_input(path) as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._buffer = pa.py_buffer(self._map)  # batches point into the map: nothing is copied
            try:
                self._file_reader = pa.ipc.open_file(pa.BufferReader(self._buffer))
                self.schema = self._file_reader.schema
                self._batch_rows = [
                    self._file_reader.get_batch(i).num_rows for i in range(self._file_reader.num_record_batches)
                ]
            except pa.ArrowInvalid:  # not the file format: the stream format (save_to_disk's shards)
                self._file_reader = None
                stream = pa.ipc.open_stream(pa.BufferReader(self._buffer))
                self.schema = stream.schema
                self._batch_rows = [batch.num_rows for batch in stream]
        except (pa.ArrowException, OSError, ValueError) as error:  # ValueError: mmap of an empty file
            raise arrow_failure(path, "Arrow IPC file", error) from None
        finally:
            self.release()
        self.num_rows = int(sum(self._batch_rows))

    def _batches(self, first: int) -> Iterator:
        if self._file_reader is not None:
            reader = self._file_reader
            return (reader.get_batch(i) for i in range(first, reader.num_record_batches))
        stream = iter(pyarrow().ipc.open_stream(pyarrow().BufferReader(self._buffer)))
        for _ in range(first):  # a stream has no index: skip the batches before (headers only)
            next(stream)
        return stream

    def batches_from(self, column: str, row: int) -> tuple[int, Iterator]:
        starts = np.cumsum([0, *self._batch_rows])
        first = int(np.searchsorted(starts, row, side="right") - 1)
        return int(starts[first]), (batch.column(column) for batch in self._batches(first))

    def whole_column(self, column: str):
        pa = pyarrow()
        chunks = [batch.column(column) for batch in self._batches(0)]
        return pa.chunked_array(chunks, type=self.schema.field(column).type)

    def release(self) -> None:
        release_pages(getattr(self, "_map", None))


Part = ParquetPart | IpcPart


class ColumnCursor:
    """Rows [start, stop) of one column of several parts read as one, in order.

    Consecutive reads continue the same batch iterator, so a pass holds one batch at a time; a
    read that starts before the current position starts again from the batch holding its first
    row. Reads may come from the audit's reader thread and from the caller's: a lock keeps the
    iterator whole.
    """

    def __init__(self, parts: Sequence[Part], column: str):
        self.parts, self.column = parts, column
        self.starts = np.cumsum([0, *(part.num_rows for part in parts)])
        self.num_rows = int(self.starts[-1])
        self._lock = threading.Lock()
        self._state: tuple[int, Iterator, int, Any] | None = None  # (part, batches, first row of pending, pending)

    def read(self, start: int, stop: int) -> list:
        """Arrow arrays holding rows [start, stop), in order, of the column."""
        pa = pyarrow()
        pieces: list = []
        touched: list[int] = []
        with self._lock:
            try:
                row = start
                while row < stop:
                    part = int(np.searchsorted(self.starts, row, side="right") - 1)
                    touched.append(part)
                    offset = int(self.starts[part])
                    end = min(stop, int(self.starts[part + 1]))
                    pieces.extend(self._read_part(part, row - offset, end - offset))
                    row = end
            except (pa.ArrowException, OSError, ValueError) as error:
                raise arrow_failure(self.parts[part].path, "Arrow data file", error) from None
            finally:  # only the parts this read used: a save_to_disk folder may hold hundreds
                for used in touched:
                    self.parts[used].release()
        return pieces

    def _read_part(self, part: int, start: int, stop: int) -> list:
        state = self._state
        if state is None or state[0] != part or state[2] > start:
            first, batches = self.parts[part].batches_from(self.column, start)
            state = (part, batches, first, None)
        _, batches, position, pending = state
        pieces = []
        while position < stop:
            batch = pending if pending is not None else next(batches, None)
            if batch is None:
                raise AuditInputError(
                    f"{self.parts[part].path}: ended at row {position}, before the rows its metadata counts"
                )
            pending = None
            if position + len(batch) <= start:  # wholly before the range
                position += len(batch)
                continue
            low, high = max(start - position, 0), min(stop - position, len(batch))
            pieces.append(batch.slice(low, high - low))
            if high < len(batch):  # the rest belongs to the next read
                pending, position = batch.slice(high), position + high
                break
            position += len(batch)
        self._state = (part, batches, position, pending)
        return pieces
