"""Data as people keep it, written in the tests with the real libraries (Pillow, pyarrow,
datasets), and the plain-numpy reference of an audit on it.

The model and teacher are the tiny ones of :mod:`tests.certify_fixtures` (64 inputs), so the
samples here are 8×8 grayscale images (1, 8, 8) or 64-number arrays.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from . import reference as ref
from .certify_fixtures import BETA, K, mlp_tensors, numpy_encoder_mu, teacher_arrays, write_model, write_teacher
from .cli_run import run


def gray_images(count: int, seed: int = 0) -> np.ndarray:
    """``count`` random 8×8 uint8 images (count, 8, 8)."""
    return np.random.default_rng(seed).integers(0, 256, (count, 8, 8), dtype=np.uint8)


def encoded(pixels: np.ndarray, image_format: str = "PNG", **options) -> bytes:
    """The image (H, W) or (H, W, C) uint8 encoded by Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def write_image_folder(root: Path, classes: dict[str, np.ndarray], suffix: str = ".png") -> Path:
    """``root/<class>/<i>.png`` for each class's images (count, H, W[, C]); names sort as i does."""
    for name, images in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(images):
            (root / name / f"{i:03d}{suffix}").write_bytes(encoded(pixels, "PNG" if suffix == ".png" else "JPEG"))
    return root


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width × height 8-bit grayscale pixels and holds none: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def rule_test_rows(count: int, every: int = 5) -> np.ndarray:
    """The rows the documented rule puts in the test split, written out here from the rule."""
    return np.array([i for i in range(count) if i % every == 0])


def rule_train_rows(count: int, every: int = 5) -> np.ndarray:
    return np.array([i for i in range(count) if i % every != 0])


def model_and_teacher(folder: Path) -> tuple[Path, Path]:
    return write_model(folder / "vae.safetensors"), write_teacher(folder / "teacher.pt")


def expected_numbers(x: np.ndarray) -> dict:
    """The certificate's numbers on inputs ``x`` (N, 64) in [0, 1], in plain numpy."""
    x = x.reshape(len(x), -1).astype(np.float64)
    mu, _ = numpy_encoder_mu(mlp_tensors(), x)
    return ref.certificate(mu, ref.pca_gmm_probs(x, teacher_arrays()), K, BETA)


def certify(folder: Path, capsys, data, *flags) -> tuple[int, dict, str]:
    """``audit certify`` of the fixtures' model and teacher on ``data``: exit code, certificate, stderr."""
    model, teacher = model_and_teacher(folder)
    out = folder / "report"
    args = ["certify", "--model", model, "--teacher", teacher, "--data", data, "--out", out, "--quiet", *flags]
    code, _, err = run(args, capsys)
    cert = json.loads((out / "certificate.json").read_text()) if (out / "certificate.json").exists() else {}
    return code, cert, err


def assert_numbers(cert: dict, x: np.ndarray) -> None:
    """The certificate's numbers are numpy's on ``x`` (μ from a float32 pass: relative 1e-5)."""
    expected = expected_numbers(x)
    assert cert["num_samples"] == len(x)
    for key in ("margin", "teacher_information", "alignment_loss", "margin_lcb"):
        assert abs(cert[key] - expected[key]) <= 1e-5 * abs(expected[key]) + 1e-6, key
