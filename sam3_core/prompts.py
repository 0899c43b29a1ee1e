"""Prompt schema (Roboflow's SAM3 interactive format) and its conversion to decoder inputs.

A prompt set holds prompts, one per object; a prompt holds an optional box (`x, y` is its
centre) and optional points. Conversion: boxes become XYXY; points are padded to
a rectangle with `[0, 0]` / label -1 ("not a point"); prompts with a box, prompts with only
points, and empty prompts are decoded as separate groups, so that mixing them in one request
neither fails nor mis-aligns, and an empty prompt is decoded exactly like "no prompt".
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from sam3_core.errors import InvalidPromptError

# The decoder's "not a point" label and the point that stands for "no prompt at all".
NOT_A_POINT = -1
SENTINEL_POINT = (0.0, 0.0)
# Coordinates and sizes past this overflow the decoder's float32 maths into NaN scores; no
# image has sides this long (SAM3_MAX_IMAGE_PIXELS).
MAX_COORDINATE = 1e9


class ClosedModel(BaseModel):
    """A prompt object: a key it does not know is a mistake (`"point"` for `"points"`), refused
    with the keys it takes, not ignored (which would answer a mask for no prompt at all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    noun: ClassVar[str] = "an object"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = [key for key in value if key not in cls.model_fields]
            if unknown:
                raise ValueError(
                    f"unknown field {', '.join(map(repr, unknown))}; "
                    f"{cls.noun} takes {', '.join(cls.model_fields)}"
                )
        return value


class Box(ClosedModel):
    """A box in original-image pixels; `x, y` is its centre (Roboflow's convention)."""

    noun: ClassVar[str] = "a box"

    x: float
    y: float
    width: float
    height: float

    def xyxy(self) -> tuple[float, float, float, float]:
        return (
            self.x - self.width / 2,
            self.y - self.height / 2,
            self.x + self.width / 2,
            self.y + self.height / 2,
        )


class Point(ClosedModel):
    """A click in original-image pixels; `positive=False` marks background."""

    noun: ClassVar[str] = "a point"

    x: float
    y: float
    # JSON true or false only: "yes" or 0 is more likely a mistake than a label.
    positive: StrictBool


class Prompt(ClosedModel):
    """One object: a box, points, both, or neither (then: the most prominent mask)."""

    noun: ClassVar[str] = "a prompt"

    box: Box | None = None
    points: list[Point] | None = None

    @field_validator("points")
    @classmethod
    def _no_points_is_none(cls, points: list[Point] | None) -> list[Point] | None:
        return points or None

    @property
    def point_count(self) -> int:
        return len(self.points or ())

    @property
    def is_empty(self) -> bool:
        return self.box is None and not self.points


class PromptSet(ClosedModel):
    """The prompts of one request, in order; the response has one prediction per prompt.

    Accepts `{"prompts": [...]}`, a bare list of prompts, or a single prompt object.
    """

    noun: ClassVar[str] = "the prompt set"

    prompts: list[Prompt] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _accept_short_forms(cls, value: Any) -> Any:
        if value is None:
            return {"prompts": []}
        if isinstance(value, list):
            return {"prompts": value}
        if isinstance(value, Prompt):
            return {"prompts": [value]}
        if isinstance(value, dict) and "prompts" not in value:
            return {"prompts": [value]}
        if isinstance(value, dict) and value.get("prompts") is None:
            return {**value, "prompts": []}
        return value

    @property
    def point_count(self) -> int:
        return sum(p.point_count for p in self.prompts)

    @property
    def prediction_count(self) -> int:
        return max(len(self.prompts), 1)

    def identity(self) -> str:
        """Stable hash: order-sensitive by prompt and point, exact coordinates."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def validate_prompt_set(prompt_set: PromptSet, *, max_prompts: int, max_points: int) -> None:
    """Values the schema lets through but the model cannot take. Raises InvalidPromptError
    naming the field (`prompts[2].box.width`)."""
    if len(prompt_set.prompts) > max_prompts:
        raise InvalidPromptError(
            f"prompts: {len(prompt_set.prompts)} prompts, the limit is {max_prompts}"
        )
    for i, prompt in enumerate(prompt_set.prompts):
        where = f"prompts[{i}]"
        if prompt.box is not None:
            for name in ("x", "y", "width", "height"):
                check_coordinate(getattr(prompt.box, name), f"{where}.box.{name}")
            for name in ("width", "height"):
                if getattr(prompt.box, name) <= 0:
                    raise InvalidPromptError(f"{where}.box.{name}: must be greater than 0")
        if prompt.point_count > max_points:
            raise InvalidPromptError(
                f"{where}.points: {prompt.point_count} points, the limit is {max_points}"
            )
        for j, point in enumerate(prompt.points or ()):
            for name in ("x", "y"):
                check_coordinate(getattr(point, name), f"{where}.points[{j}].{name}")


def check_coordinate(value: float, field: str) -> None:
    """A prompt coordinate, finite and within ±MAX_COORDINATE pixels (points, boxes, exemplars)."""
    if not math.isfinite(value):
        raise InvalidPromptError(f"{field}: must be a finite number")
    if abs(value) > MAX_COORDINATE:
        raise InvalidPromptError(f"{field}: must be within ±{MAX_COORDINATE:g} pixels")


def check_inside_image(prompt_set: PromptSet, orig_hw: tuple[int, int]) -> None:
    """Points must lie on the image (edges included) and boxes must overlap it; a box that
    crosses an edge is an ordinary drag past it and is kept as sent. Raises
    InvalidPromptError naming the field and the image's size."""
    for i, prompt in enumerate(prompt_set.prompts):
        for j, point in enumerate(prompt.points or ()):
            check_on_image(point.x, point.y, orig_hw, f"prompts[{i}].points[{j}]")
        if prompt.box is not None and outside_image(prompt.box.xyxy(), orig_hw):
            raise InvalidPromptError(
                f"prompts[{i}].box: {_describe_box(prompt.box.xyxy())} misses the image "
                f"({_describe_size(orig_hw)}); box x, y is its centre"
            )


def check_on_image(x: float, y: float, orig_hw: tuple[int, int], where: str) -> None:
    height, width = orig_hw
    for name, value, extent in (("x", x, width), ("y", y, height)):
        if not 0 <= value <= extent:
            raise InvalidPromptError(
                f"{where}.{name}: {value:g} is outside the image ({_describe_size(orig_hw)}: "
                f"{name} from 0 to {extent})"
            )


def outside_image(xyxy: tuple[float, float, float, float], orig_hw: tuple[int, int]) -> bool:
    """Whether a box has no area in common with the image."""
    x0, y0, x1, y1 = xyxy
    height, width = orig_hw
    return x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height


def _describe_box(xyxy: tuple[float, float, float, float]) -> str:
    return "x0, y0, x1, y1 = " + ", ".join(f"{v:g}" for v in xyxy)


def _describe_size(orig_hw: tuple[int, int]) -> str:
    return f"{orig_hw[1]}x{orig_hw[0]} pixels"


@dataclass(frozen=True)
class DecoderGroup:
    """Prompts decoded together in one call, and where their predictions go.

    Attributes:
        slots: (B,) positions of these prompts in the prompt set.
        point_coords: (B, N, 2) float32 or None (a group of boxes without points).
        point_labels: (B, N) int32: 1 positive, 0 negative, -1 padding.
        boxes: (B, 4) float32 XYXY, or None.
    """

    slots: tuple[int, ...]
    point_coords: np.ndarray | None
    point_labels: np.ndarray | None
    boxes: np.ndarray | None


def _points_rectangle(prompts: list[Prompt]) -> tuple[np.ndarray, np.ndarray] | None:
    width = max(p.point_count for p in prompts)
    if width == 0:
        return None
    coords = np.zeros((len(prompts), width, 2), dtype=np.float32)
    labels = np.full((len(prompts), width), NOT_A_POINT, dtype=np.int32)
    for row, prompt in enumerate(prompts):
        for col, point in enumerate(prompt.points or ()):
            coords[row, col] = (point.x, point.y)
            labels[row, col] = int(point.positive)
    return coords, labels


def decoder_groups(prompt_set: PromptSet) -> list[DecoderGroup]:
    """Split a prompt set into decoder calls; no prompt at all is one sentinel prompt."""
    prompts = prompt_set.prompts or [Prompt()]
    with_box = [i for i, p in enumerate(prompts) if p.box is not None]
    points_only = [i for i, p in enumerate(prompts) if p.box is None and p.points]
    empty = [i for i, p in enumerate(prompts) if p.is_empty]
    groups = []
    if with_box:
        members = [prompts[i] for i in with_box]
        rectangle = _points_rectangle(members)
        groups.append(
            DecoderGroup(
                slots=tuple(with_box),
                point_coords=None if rectangle is None else rectangle[0],
                point_labels=None if rectangle is None else rectangle[1],
                boxes=np.array([p.box.xyxy() for p in members if p.box], dtype=np.float32),
            )
        )
    if points_only:
        coords, labels = _points_rectangle([prompts[i] for i in points_only])  # type: ignore[misc]
        groups.append(
            DecoderGroup(
                slots=tuple(points_only), point_coords=coords, point_labels=labels, boxes=None
            )
        )
    if empty:
        groups.append(
            DecoderGroup(
                slots=tuple(empty),
                point_coords=np.tile(np.array(SENTINEL_POINT, np.float32), (len(empty), 1, 1)),
                point_labels=np.full((len(empty), 1), NOT_A_POINT, dtype=np.int32),
                boxes=None,
            )
        )
    return groups


def is_strict_subset(earlier: PromptSet, new: PromptSet) -> bool:
    """Whether `earlier` refines into `new` position by position: as many prompts,
    each with an identical box and a subset of the new prompt's points, and at least one
    prompt with fewer points (equal sets never match)."""
    if len(earlier.prompts) != len(new.prompts):
        return False
    proper = False
    for old, current in zip(earlier.prompts, new.prompts, strict=True):
        old_points, new_points = set(old.points or ()), set(current.points or ())
        if old.box != current.box or not old_points <= new_points:
            return False
        proper = proper or old_points < new_points
    return proper
