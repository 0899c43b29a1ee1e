"""Label Studio's ML-backend wire format (`label_studio_ml/api.py`): the bodies Label Studio
sends to `/predict`, `/setup` and `/webhook`, its labelling config (which tags name the image,
the brush masks and the smart tools), the smart regions of an interactive request as a
prompt, and masks as `brushlabels` results in Label Studio's own brush RLE.

No torch here: the ingress converts these bodies to the service's operations and back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sam3_core.errors import InvalidPromptError
from sam3_core.prompts import Box, Point, Prompt

MODEL_CLASS = "Sam3Serve"
KEYPOINTS = "keypointlabels"
RECTANGLES = "rectanglelabels"
BRUSH = "brushlabels"
# Label Studio's brush RLE: a 32-bit value count, 8-bit words (stored as size - 1 in 5 bits)
# and the four run-length field widths its encoder and its front end's decoder use.
_WORD_BITS = 8
_RUN_FIELD_BITS = (3, 4, 8, 16)
_MAX_RUN = 1 << 16


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PredictParams(_Body):
    context: dict[str, Any] | None = None


class PredictRequest(_Body):
    """`POST /predict`: tasks (each with its `data`), the project's labelling config, and for
    an interactive request the smart regions drawn so far in `params.context.result`."""

    tasks: list[dict[str, Any]] = Field(default_factory=list)
    label_config: str | None = None
    project: str | int | None = None
    model_version: str | None = None
    params: PredictParams = Field(default_factory=PredictParams)
    # Label Studio's older clients sent the context beside the params.
    context: dict[str, Any] | None = None

    def regions(self) -> list[dict[str, Any]]:
        """The interactive request's smart regions; empty for a pre-annotation."""
        context = self.params.context or self.context or {}
        result = context.get("result")
        return [r for r in result if isinstance(r, dict)] if isinstance(result, list) else []


class SetupRequest(_Body):
    """`POST /setup`: sent when a project connects the backend."""

    project: str | int | None = None
    label_schema: str | None = Field(None, alias="schema")
    extra_params: dict[str, Any] | str | None = None


@dataclass(frozen=True)
class LabelConfig:
    """What a labelling config says the backend should produce.

    Attributes:
        image_key: the task data field holding the image (`value="$image"` → "image").
        brush_name, brush_to: the `BrushLabels` tag's `name` and `toName`, which every
            result names as `from_name` and `to_name`.
        labels: the `BrushLabels` tag's label values, in order (pre-annotation concepts).
    """

    image_key: str
    brush_name: str
    brush_to: str
    labels: tuple[str, ...]


def parse_label_config(config: str | None) -> LabelConfig:
    """The first `BrushLabels` tag and the `Image` tag it labels. Raises InvalidPromptError
    when the config has neither (the backend has nothing to produce)."""
    if not config:
        raise InvalidPromptError("the request has no label_config")
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as exc:
        raise InvalidPromptError(f"label_config is not valid XML: {exc}") from exc
    brush = next((tag for tag in root.iter() if tag.tag == "BrushLabels"), None)
    if brush is None or not brush.get("name") or not brush.get("toName"):
        raise InvalidPromptError(
            "label_config needs a <BrushLabels name=... toName=...> tag: sam3-serve answers "
            "with brush masks"
        )
    to_name = brush.get("toName", "").split(",")[0]
    image = next(
        (tag for tag in root.iter() if tag.tag == "Image" and tag.get("name") == to_name), None
    )
    value = image.get("value", "") if image is not None else ""
    if not value.startswith("$") or len(value) < 2:
        raise InvalidPromptError(f'label_config has no <Image name="{to_name}" value="$...">')
    labels = tuple(
        label.get("value", "") for label in brush.iter("Label") if label.get("value", "")
    )
    return LabelConfig(value[1:], brush.get("name", ""), to_name, labels)


@dataclass(frozen=True)
class Interaction:
    """An interactive request's smart regions as one prompt, in original-image pixels."""

    prompt: Prompt
    label: str | None
    width: int
    height: int


def interaction(regions: list[dict[str, Any]]) -> Interaction | None:
    """Smart keypoints (positive unless `is_positive` is false, as Label Studio marks a point
    placed with Alt) and the latest smart rectangle, as one object's prompt; None without
    any. Label Studio gives positions in percent of the image's original size."""
    points: list[Point] = []
    box: Box | None = None
    label: str | None = None
    size: tuple[int, int] | None = None
    for region in regions:
        kind = str(region.get("type", "")).lower()
        if kind not in (KEYPOINTS, RECTANGLES):
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            raise InvalidPromptError(f"a {kind} region needs a value object")
        try:
            width, height = int(region["original_width"]), int(region["original_height"])
            x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InvalidPromptError(
                f"a {kind} region needs original_width, original_height and value.x, value.y"
            ) from exc
        if width <= 0 or height <= 0:
            raise InvalidPromptError("original_width and original_height must be positive")
        size = (width, height)
        names = value.get(kind)
        label = str(names[0]) if isinstance(names, list) and names else label
        positive = region.get("is_positive", True) is not False
        if kind == KEYPOINTS:
            points.append(Point(x=x, y=y, positive=positive))
            continue
        if not positive:
            raise InvalidPromptError(
                "a negative rectangle has no meaning for interactive SAM: mark background "
                "with negative keypoints (Alt+click)"
            )
        try:
            w, h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InvalidPromptError("a rectanglelabels region needs value.width, height") from exc
        # SAM takes one box per object: the latest rectangle, as Label Studio's SAM backends.
        box = Box(x=x + w / 2, y=y + h / 2, width=w, height=h)
    if size is None:
        return None
    return Interaction(Prompt(box=box, points=points or None), label, size[0], size[1])


def brush_result(
    mask: np.ndarray, score: float, label: str | None, config: LabelConfig, region_id: str
) -> dict[str, Any]:
    """One `brushlabels` result for an (H, W) bool mask."""
    height, width = mask.shape
    return {
        "id": region_id,
        "from_name": config.brush_name,
        "to_name": config.brush_to,
        "type": BRUSH,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": brush_rle(mask), BRUSH: [label] if label else []},
        "score": float(score),
        "readonly": False,
    }


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of an (H, W) bool mask: the mask as RGBA bytes (255 where set,
    row by row, every channel alike) packed as Label Studio's `brush.encode_rle` packs them,
    byte for byte, so its front end and `label_studio_sdk.converter.brush.decode_rle` read it.

    Written with NumPy rather than taken from `label_studio_sdk`, whose encoder builds a
    Python string of bits (seconds for a noisy mask) and whose package pins an OpenCV older
    than the service's.

    Returns:
        The RLE's bytes as ints, Label Studio's `value.rle`.
    """
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    values = np.where(flat, 255, 0).astype(np.int64)
    if flat.size:
        starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
        lengths = np.diff(np.append(starts, flat.size)) * 4  # RGBA: four equal bytes a pixel
        values = values[starts]
    else:
        lengths = np.zeros(0, np.int64)
    # Runs longer than a 16-bit field holds are cut into full pieces plus the rest.
    pieces = (lengths - 1) // _MAX_RUN
    total = np.repeat(lengths, pieces + 1)
    values = np.repeat(values, pieces + 1)
    last = np.zeros(len(total), bool)
    last[np.cumsum(pieces + 1) - 1] = True
    lengths = np.where(last, total - np.repeat(pieces, pieces + 1) * _MAX_RUN, _MAX_RUN)

    field = np.searchsorted(np.array([8, 16, 256]), lengths, side="left")  # 0..3
    field_bits = np.array(_RUN_FIELD_BITS)[field]
    repeated = (lengths > 1).astype(np.int64)  # a single value is a literal of one word
    codes = (
        (repeated << (2 + field_bits + _WORD_BITS))
        | (field << (field_bits + _WORD_BITS))
        | ((lengths - 1) << _WORD_BITS)
        | values
    )
    header_codes = [4 * len(flat), _WORD_BITS - 1, *(bits - 1 for bits in _RUN_FIELD_BITS)]
    header_bits = [32, 5, 4, 4, 4, 4]
    codes = np.concatenate((np.array(header_codes, np.int64), codes))
    widths = np.concatenate((np.array(header_bits), 3 + field_bits + _WORD_BITS))
    bits = np.unpackbits(codes.astype(">u4").view(np.uint8)).reshape(-1, 32)
    stream = bits[np.arange(32)[None, :] >= 32 - widths[:, None]]
    if stream.size % 8 == 0:  # Label Studio's encoder always pads, a whole byte if aligned
        stream = np.concatenate((stream, np.zeros(8, np.uint8)))
    return np.packbits(stream).tolist()
