"""The flags that say how to read a data set, declared once for every command that reads one
(``certify``, ``teacher fit``/``search``, ``design``, ``train``, ``reproduce``)."""

from __future__ import annotations

import typer

from ..sources.datasets.options import DataOptions, parse_image_size

IMAGE_SIZE = typer.Option(
    None, "--image-size", help="Resize every image to N×N, or H,W, pixels (needed when image sizes differ)."
)
COLUMN = typer.Option(
    None,
    "--column",
    help="Parquet/Arrow data: the samples' column (default: the first image or fixed-shape array column).",
)
TEST_EVERY = typer.Option(
    None,
    "--test-every",
    help="Data without a train/test split of their own: row i is test when i % M == 0 (default M = 5).",
)


def data_options(image_size: str | None, column: str | None, test_every: int | None) -> DataOptions:
    return DataOptions(image_size=parse_image_size(image_size), column=column, test_every=test_every)
