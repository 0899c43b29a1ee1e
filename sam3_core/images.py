"""Images: their ids (SHA-256 of the bytes, or the client's within limits), and bytes to RGB
pixels within a pixel limit.

Pixels are decoded by Pillow from a fixed list of raster formats; nothing a client sends is
ever unpickled (Roboflow's `numpy` image type is a pickle and is refused).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sam3_core.errors import ImageTooLargeError, InvalidImageError, InvalidImageIdError

# JPEG includes MPO (multi-picture JPEGs from phone cameras).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

IMAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@+=-]+$")

# Pillow's own refusal: "Image size (N pixels) exceeds limit of M pixels, ...".
_PILLOW_REFUSAL = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


def content_id(data: bytes) -> str:
    """The `image_id` of an image sent without one: SHA-256 of its bytes, hex."""
    return hashlib.sha256(data).hexdigest()


def check_image_id(image_id: str, *, max_length: int) -> str:
    """Client-chosen ids are kept as sent, within a length and a conservative character set."""
    if not image_id:
        raise InvalidImageIdError("image_id is empty")
    if len(image_id) > max_length:
        raise InvalidImageIdError(
            f"image_id has {len(image_id)} characters, the limit is {max_length}"
        )
    if not IMAGE_ID_PATTERN.match(image_id):
        raise InvalidImageIdError("image_id may contain only letters, digits and . _ : / @ + = -")
    return image_id


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        # Pillow's convert() clips 16-bit values to 255; keep the high byte instead.
        high = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(high, mode="L").convert("RGB")
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def _over_pillows_limit(refusal: str, max_pixels: int) -> str:
    """The message for an image Pillow refused while opening it, over twice its own
    `Image.MAX_IMAGE_PIXELS` (~179 MP), before our own check could run: it names the limit
    a client and an operator know, `SAM3_MAX_IMAGE_PIXELS`."""
    found = _PILLOW_REFUSAL.search(refusal)
    if found is None:
        return f"the image is over the pixel limit, {max_pixels} (SAM3_MAX_IMAGE_PIXELS)"
    pixels, pillow_limit = int(found.group(1)), int(found.group(2))
    if pixels > max_pixels:
        return f"the image is {pixels} pixels, the limit is {max_pixels} (SAM3_MAX_IMAGE_PIXELS)"
    return (
        f"the image is {pixels} pixels, over Pillow's decompression-bomb guard of "
        f"{pillow_limit} pixels, which caps SAM3_MAX_IMAGE_PIXELS ({max_pixels})"
    )


@contextmanager
def _decoding(max_pixels: int) -> Iterator[None]:
    """Pillow's failures as the engine's errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(_over_pillows_limit(str(exc), max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"the image is not in a supported format ({', '.join(ALLOWED_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InvalidImageError(f"the image cannot be decoded: {exc}") from exc


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The image with its header read (not its pixels), within the pixel limit."""
    image = Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height} pixels, "
            f"the limit is {max_pixels} (SAM3_MAX_IMAGE_PIXELS)"
        )
    return image


def image_size(data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """(H, W) of the stored picture, from its header alone (EXIF rotation may swap them)."""
    with _decoding(max_pixels):
        width, height = _open(data, max_pixels).size
    return height, width


def load_rgb(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode image bytes to pixels: EXIF orientation applied, any mode converted to RGB.

    The pixel limit is checked from the header, before the pixels are decoded.

    Returns:
        (H, W, 3) uint8.
    """
    with _decoding(max_pixels):
        image = ImageOps.exif_transpose(_open(data, max_pixels))
        image.load()
        pixels = np.array(_to_rgb(image))
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise InvalidImageError(f"the image decodes to an unusable shape {pixels.shape}")
    return pixels
