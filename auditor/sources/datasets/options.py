"""How to read a data set beyond its SPEC: image size, column, label column and the split rule.

:class:`DataOptions` is what ``--image-size``, ``--column`` and ``--test-every`` turn into (and
``label_column``, for library callers). Each format says which options it takes (``FileFormat.takes``
and ``FolderFormat.takes``); :func:`auditor.sources.datasets.registry.open_dataset` refuses an
option given to a format that would ignore it, so a flag never silently does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import AuditInputError

# The option each field comes from, as the user wrote it (label_column has no command-line flag:
# no command reads labels, so only library callers can ask for them).
OPTION_NAMES = {
    "image_size": "--image-size",
    "column": "--column",
    "label_column": "label_column",
    "test_every": "--test-every",
}


@dataclass(frozen=True)
class DataOptions:
    """Reading options of one data set; None everywhere means the documented defaults."""

    image_size: tuple[int, int] | None = None  # (height, width) every image is resized to
    column: str | None = None  # Parquet/Arrow: the column of samples
    label_column: str | None = None  # Parquet/Arrow: the column of integer labels
    test_every: int | None = None  # the file split rule's M (default 5): row i is test when i % M == 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        if self.test_every is not None:
            check_test_every(self.test_every)
        for name in ("column", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise AuditInputError(f"{OPTION_NAMES[name]} must name a column, got {value!r}")

    def given(self) -> list[str]:
        """The fields set to something other than their default."""
        return [name for name in OPTION_NAMES if getattr(self, name) is not None]


def parse_image_size(value: str | int | Sequence[int] | None) -> tuple[int, int] | None:
    """``32`` or ``"32"`` → (32, 32); ``"24,32"`` or (24, 32) → (24, 32) as (height, width)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts: list = [part.strip() for part in value.split(",")]
    elif isinstance(value, (int, np.integer)):
        parts = [value]
    else:
        parts = list(value)
    try:
        sizes = [int(part) for part in parts if not isinstance(part, bool) and str(part) == str(int(part))]
    except (TypeError, ValueError):
        sizes = []
    if len(sizes) != len(parts) or len(sizes) not in (1, 2) or min(sizes) < 1:
        raise AuditInputError(f"--image-size must be N or H,W (whole numbers of pixels >= 1), got {value!r}")
    return (sizes[0], sizes[-1])


def check_test_every(every: int) -> None:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 2:
        raise AuditInputError(
            f"--test-every must be a whole number >= 2 (row i is test when i % M == 0), got {every!r}"
        )
