"""PNG and JPEG images decoded with Pillow into uint8 (C, H, W), for image folders and image columns.

Pillow is the optional extra ``images``, imported only when images are read. Only the PNG and
JPEG decoders are used, whatever a file's name says. Every image of a data set is looked at
(its header only) before any is decoded, so that one rule holds for all of them, whichever split
is read:

- **Channels**: grayscale (1 channel, Pillow mode L) when every image is grayscale (modes 1, L,
  LA), else RGB (3 channels). Alpha is dropped, not composited; palettes are expanded. 16-bit and
  float images are refused (converting them to 8 bits would clip them).
- **Size**: every image must have the same size, unless ``--image-size`` is given: then each one
  is resized to it with Pillow's bilinear filter (antialiased when shrinking), aspect ratio not
  kept. EXIF orientation is not applied: pixels are used as stored, as torchvision's
  ``ImageFolder`` does.
- **Decompression bombs**: an image with more pixels than Pillow's ``MAX_IMAGE_PIXELS``
  (89,478,485 unless changed) is refused before it is decoded.

PNG decoding is exact; JPEG decoding may differ in the last bit between libjpeg versions.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import AuditInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DECODERS = ("PNG", "JPEG")
GRAYSCALE_MODES = frozenset({"1", "L", "LA"})
CLIPPED_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})  # more than 8 bits per channel


def pillow_image():
    """Pillow's ``PIL.Image`` module, or a one-line error naming the extra that installs it."""
    try:
        from PIL import Image
    except ImportError:
        raise AuditInputError("reading images needs Pillow: pip install 'vae-audit[images]'") from None
    return Image


ImageSource = Path | bytes  # a file, or a file's bytes (an image column's cell)


@dataclass(frozen=True)
class ImageLayout:
    """How every image of a data set is decoded: to ``mode`` (L or RGB), then to ``size`` (H, W)."""

    mode: str
    size: tuple[int, int]
    resize: bool  # --image-size was given: every image is resized to ``size``

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, *self.size)


def _opened(source: ImageSource):
    return pillow_image().open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=DECODERS)


def _unreadable(name: str, error: Exception) -> AuditInputError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, pillow_image().UnidentifiedImageError):
        reason = "not a PNG or JPEG image"
    return AuditInputError(f"{name}: cannot be decoded ({reason})")


def _checked_header(image, name: str) -> tuple[str, int, int]:
    """The image's mode, height and width, once its size and mode are known to be acceptable."""
    limit = pillow_image().MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise _bomb(name)
    if image.mode in CLIPPED_MODES:
        raise AuditInputError(
            f"{name}: {image.mode} images (16-bit or float) are not supported; store 8-bit PNG or JPEG"
        )
    return image.mode, height, width


def _bomb(name: str) -> AuditInputError:
    limit = pillow_image().MAX_IMAGE_PIXELS
    return AuditInputError(
        f"{name}: more pixels than Pillow's MAX_IMAGE_PIXELS ({limit}); refused as a possible decompression bomb"
    )


def read_header(source: ImageSource, name: str) -> tuple[str, int, int]:
    """Mode, height and width from the image's header, without decoding its pixels."""
    Image = pillow_image()
    # Pillow warns (past MAX_IMAGE_PIXELS) or raises (past twice that) while opening; the warning
    # is made an error here so that nothing reaches the terminal but the one-line refusal.
    # Headers are read on the calling thread when the data set is opened, before any helper thread runs.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with _opened(source) as image:
                return _checked_header(image, name)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise _bomb(name) from None
        except AuditInputError:
            raise
        except Exception as error:  # Pillow raises many types for damaged files: each becomes one line
            raise _unreadable(name, error) from None


def image_layout(
    headers: Iterable[tuple[str, tuple[str, int, int]]], image_size: tuple[int, int] | None
) -> ImageLayout:
    """The layout of a data set from every image's (name, (mode, height, width)); refuses mixed sizes
    without ``image_size`` and a data set without images."""
    grayscale, first = True, None
    for name, (mode, height, width) in headers:
        grayscale = grayscale and mode in GRAYSCALE_MODES
        if first is None:
            first = (name, height, width)
        elif image_size is None and (height, width) != first[1:]:
            raise AuditInputError(
                f"{name}: image is {height}x{width} (HxW) but {first[0]} is {first[1]}x{first[2]}; "
                f"give --image-size to resize every image"
            )
    if first is None:
        raise AuditInputError("no images to read")
    return ImageLayout("L" if grayscale else "RGB", image_size or first[1:], image_size is not None)


def decode_image(source: ImageSource, name: str, layout: ImageLayout) -> np.ndarray:
    """The image as uint8 (C, H, W) in ``layout``."""
    Image = pillow_image()
    try:
        with _opened(source) as image:
            _checked_header(image, name)
            converted = image.convert(layout.mode)  # decodes; drops alpha, expands palettes
    except AuditInputError:
        raise
    except Exception as error:  # truncated or corrupt data: Pillow raises OSError, SyntaxError, ValueError …
        raise _unreadable(name, error) from None
    height, width = layout.size
    if (converted.height, converted.width) != (height, width):
        if not layout.resize:  # the file changed since its header was read
            raise AuditInputError(
                f"{name}: image is {converted.height}x{converted.width} (HxW), expected {height}x{width}"
            )
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def decode_images(sources: Iterable[tuple[ImageSource, str]], count: int, layout: ImageLayout) -> np.ndarray:
    """``count`` images as one uint8 (count, C, H, W) array of its own."""
    out = np.empty((count, *layout.sample_shape), np.uint8)
    for row, (source, name) in enumerate(sources):
        out[row] = decode_image(source, name, layout)
    return out
