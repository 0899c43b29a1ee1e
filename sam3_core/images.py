"""Client images: base64 to bytes, bytes to RGB pixels, with byte and pixel limits.

Pixels are decoded by Pillow from a fixed list of raster formats; nothing a client sends is
ever unpickled (Roboflow's `numpy` image type is a pickle and is refused).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import warnings
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sam3_core.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidImageIdError,
    UrlInputError,
)
from sam3_core.schemas import ImageInput
from sam3_core.settings import EngineSettings
from sam3_core.url_fetch import UrlPolicy, fetch_image

# JPEG includes MPO (multi-picture JPEGs from phone cameras).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
IMAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@+=-]+$")


def decode_base64(value: str, *, max_bytes: int) -> bytes:
    """Base64 text, with or without a `data:image/...;base64,` prefix, to the image's bytes."""
    text = _WHITESPACE.sub("", _DATA_URL.sub("", value.strip(), count=1))
    if not text:
        raise InvalidImageError("image.value is empty")
    if len(text) // 4 * 3 > max_bytes + 2:
        raise ImageTooLargeError(
            f"the image is about {len(text) // 4 * 3} bytes, the limit is {max_bytes}"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(f"image.value is not valid base64: {exc}") from exc
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image is {len(data)} bytes, the limit is {max_bytes}")
    return data


def read_image_input(image: ImageInput, settings: EngineSettings) -> bytes:
    """The bytes of a client's image: base64 decoded, or (where enabled) fetched by URL."""
    kind = image.type.lower()
    if kind == "base64":
        return decode_base64(image.value, max_bytes=settings.max_image_bytes)
    if kind == "url":
        if not settings.allow_url_input:
            raise UrlInputError("URL images are disabled on this server (SAM3_ALLOW_URL_INPUT)")
        policy = UrlPolicy(
            allowed_hosts=settings.url_allowed_hosts,
            allow_private_networks=settings.url_allow_private_networks,
            max_bytes=settings.max_image_bytes,
            timeout_seconds=settings.url_timeout_seconds,
            max_redirects=settings.url_max_redirects,
        )
        return fetch_image(image.value, policy)
    raise InvalidImageError(f"image.type {image.type!r} is not supported; use base64 or url")


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


def load_rgb(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode image bytes to pixels: EXIF orientation applied, any mode converted to RGB.

    The pixel limit is checked from the header, before the pixels are decoded.

    Returns:
        (H, W, 3) uint8.
    """
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"the image is {width}x{height} = {width * height} pixels, "
                    f"the limit is {max_pixels}"
                )
            image = ImageOps.exif_transpose(image)
            image.load()
            pixels = np.array(_to_rgb(image))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the image is too large to decode: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"the image is not in a supported format ({', '.join(ALLOWED_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InvalidImageError(f"the image cannot be decoded: {exc}") from exc
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise InvalidImageError(f"the image decodes to an unusable shape {pixels.shape}")
    return pixels
