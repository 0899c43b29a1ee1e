"""Images and request bodies shared by benchmarks and tests.

Every picture is seeded: a benchmark or test sends the same bytes on every run. Random
weights make any picture as good as another for the model; noise, smooth blobs and a flat
grey differ in what the service does with the bytes (decoding, resizing, JPEG size). No
torch: HTTP clients and test helpers import this module.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image


def random_pixels(seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    """Uniform noise: (height, width, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode_image(pixels: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    """`pixels` (H, W, 3) or (H, W) uint8 as an image file; `options` go to PIL's `save`."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def random_image(
    seed: int, height: int = 96, width: int = 128, fmt: str = "PNG", **options: object
) -> bytes:
    """`random_pixels(seed, height, width)` as an image file (PNG unless `fmt` says)."""
    return encode_image(random_pixels(seed, height, width), fmt, **options)


def smooth_image(seed: int, height: int = 480, width: int = 640) -> bytes:
    """A smooth random picture (blobs of colour: 6x8 random pixels resized bicubically) as
    JPEG at quality 85, the size a photo of that many pixels has."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def flat_image(height: int, width: int, grey: int = 128) -> bytes:
    """One grey level over the whole picture, as PNG: many pixels in few bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (grey, grey, grey)).save(buffer, "PNG")
    return buffer.getvalue()


def image_body(data: bytes) -> dict[str, str]:
    """The `image` field of a request carrying `data` inline."""
    return {"type": "base64", "value": base64.b64encode(data).decode()}


def click_body(image_id: str, points: list[tuple[float, float]], **options: Any) -> dict:
    """A `visual_segment` body: one prompt of positive `points` on `image_id`, RLE masks;
    `options` are further fields (`image`, `save_logits_to_cache`, ...)."""
    prompts = [{"points": [{"x": x, "y": y, "positive": True} for x, y in points]}]
    return {"image_id": image_id, "prompts": prompts, "format": "rle", **options}
