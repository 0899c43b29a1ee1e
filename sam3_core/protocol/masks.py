"""Masks to the API's wire formats: polygons (OpenCV contours), COCO RLE (pycocotools) and
Roboflow's binary NumPy archive."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from pycocotools import mask as coco_mask

from sam3_core.protocol.bodies import Prediction, RleMask

Polygon = list[list[int]]
BINARY = "application/octet-stream"


def mask_to_polygons(mask: np.ndarray) -> list[Polygon]:
    """One polygon per external contour, as integer `[x, y]` pixels of the original image.

    Args:
        mask: (H, W) bool.

    Returns:
        `[[]]` for an empty mask (Roboflow's convention), else `[[[x, y], ...], ...]`.
    """
    # Imported here: the CPU ingress imports this package for its operation table but never
    # draws a polygon, and OpenCV is the heaviest import it would otherwise pay for.
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = [contour.reshape(-1, 2).tolist() for contour in contours]
    return polygons or [[]]


def masks_to_rle(masks: np.ndarray) -> list[dict[str, object]]:
    """COCO compressed RLE (column-major), decodable with `pycocotools.mask.decode`.

    Args:
        masks: (P, H, W) bool.

    Returns:
        P dicts `{"size": [H, W], "counts": str}`.
    """
    if len(masks) == 0:
        return []
    encoded = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [
        {"size": [int(h) for h in rle["size"]], "counts": rle["counts"].decode("ascii")}
        for rle in encoded
    ]


def masks_npz(masks: np.ndarray, low_res_logits: np.ndarray) -> bytes:
    """`format: "binary"` as Roboflow's server answers it: `numpy.savez_compressed` of
    `masks` and `low_res_masks` (its SAM3 visual_segment sends full-size float logits as
    `masks`; these are thresholded, so `masks > 0` reads alike in a client).

    Args:
        masks: (P, H, W) bool.
        low_res_logits: (P, L, L) float32.
    """
    buffer = io.BytesIO()
    np.savez_compressed(buffer, masks=masks, low_res_masks=low_res_logits)
    return buffer.getvalue()


def encode_predictions(
    masks: np.ndarray, scores: np.ndarray, mask_format: Literal["polygon", "rle"]
) -> list[Prediction]:
    """One prediction per mask.

    Args:
        masks: (P, H, W) bool.
        scores: (P,) float.
    """
    if mask_format == "rle":
        return [
            Prediction(masks=RleMask(**rle), confidence=float(score), format="rle")
            for rle, score in zip(masks_to_rle(masks), scores, strict=True)
        ]
    return [
        Prediction(masks=mask_to_polygons(mask), confidence=float(score), format="polygon")
        for mask, score in zip(masks, scores, strict=True)
    ]
