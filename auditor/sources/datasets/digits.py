"""``digits``, the built-in data set: scikit-learn's handwritten digits, with no download.

1797 samples of 64 pixels with values 0–16, divided by 16 into float32 in [0, 1]; labels are the
digits 0–9. Fixed split: sample ``i`` is in **test** when ``i % 5 == 0`` (360 samples) and in
**train** otherwise (1437). Its input record is ``builtin:digits`` with the sha256 of
``load_digits().data`` (float64, C order, before the division by 16), so a verifier can
recompute it.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from ..arrays import InMemoryArray
from ..hashing import InputRecord
from .interface import Rows

DESCRIPTION = "scikit-learn handwritten digits: 1797 x 64, values/16 in [0, 1]; test = i % 5 == 0"


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """load_digits() pixels (float64, 0–16) and targets, read-only so the cache stays intact."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.ascontiguousarray(bunch.data)
    targets = np.asarray(bunch.target, dtype=np.int64)
    pixels.flags.writeable = False
    targets.flags.writeable = False
    return pixels, targets


def digits_test_mask(count: int = 1797) -> np.ndarray:
    """The documented digits split: sample i is a test sample when i % 5 == 0."""
    return np.arange(count) % 5 == 0


def open_digits(split: str) -> Rows:
    pixels, targets = _digits_raw()
    is_test = digits_test_mask(len(pixels))
    keep = {"all": np.ones_like(is_test), "test": is_test, "train": ~is_test}[split]
    # Division by 16 is exact in float32 (values are the integers 0–16).
    scaled = pixels[keep].astype(np.float32) / np.float32(16)
    labels = targets[keep]
    return Rows(InMemoryArray(scaled), lambda: labels, [])


def digits_record(role: str) -> InputRecord:
    pixels, _ = _digits_raw()
    return InputRecord(role, "builtin:digits", hashlib.sha256(pixels.tobytes()).hexdigest())
