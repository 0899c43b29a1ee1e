"""Checks of a video prompt (`add_prompt`) against its session: what sam3 asserts, answered
as a 400 naming the field instead."""

from __future__ import annotations

from typing import Any

import numpy as np

from sam3_core.errors import InvalidPromptError
from sam3_core.settings import RequestLimits


def check_prompt(
    state: dict[str, Any],
    limits: RequestLimits,
    frame_index: int,
    text: str | None,
    points: list[list[float]] | None,
    point_labels: list[int] | None,
    boxes: list[list[float]] | None,
    box_labels: list[int] | None,
    obj_id: int | None,
) -> None:
    """sam3 asserts these; a client gets a 400 naming the field instead."""
    num_frames = state["num_frames"]
    if not 0 <= frame_index < num_frames:
        raise InvalidPromptError(f"frame_index {frame_index} is outside 0..{num_frames - 1}")
    if text is None and points is None and boxes is None:
        raise InvalidPromptError("send text, points or bounding_boxes")
    if text is not None and len(text) > limits.max_text_length:
        raise InvalidPromptError(
            f"text has {len(text)} characters, over SAM3_MAX_TEXT_LENGTH={limits.max_text_length}"
        )
    if points is not None:
        if text is not None or boxes is not None:
            raise InvalidPromptError("points go alone: not with text or bounding_boxes")
        if obj_id is None:
            raise InvalidPromptError("points need the obj_id of the object they refine")
        check_coordinates("points", points, point_labels, 2, limits)
        if frame_index not in state["cached_frame_outputs"]:
            raise InvalidPromptError(
                f"points refine an object on a frame with outputs: add a text or box "
                f"prompt on frame {frame_index}, or propagate through it, first"
            )
    if boxes is not None:
        check_coordinates("bounding_boxes", boxes, box_labels, 4, limits)
        for x, y, w, h in boxes:
            if w <= 0 or h <= 0 or x + w > 1 or y + h > 1:
                raise InvalidPromptError(
                    "bounding_boxes are [x, y, w, h] from the top-left, normalised: "
                    "w and h above 0, x + w and y + h at most 1"
                )


def check_coordinates(
    name: str, values: list[list[float]], labels: list[int] | None, width: int,
    limits: RequestLimits,
) -> None:  # fmt: skip
    label_name = "point_labels" if name == "points" else "bounding_box_labels"
    if not values:
        raise InvalidPromptError(f"{name} is empty")
    if len(values) > limits.max_points_per_prompt:
        raise InvalidPromptError(
            f"{len(values)} {name}, over SAM3_MAX_POINTS_PER_PROMPT={limits.max_points_per_prompt}"
        )
    if labels is None or len(labels) != len(values):
        raise InvalidPromptError(f"{label_name} needs one label (0 or 1) per entry of {name}")
    if any(label not in (0, 1) for label in labels):
        raise InvalidPromptError(f"{label_name} are 0 (negative) or 1 (positive)")
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (len(values), width):
        raise InvalidPromptError(f"each entry of {name} has {width} numbers")
    if not np.isfinite(array).all() or (array < 0).any() or (array > 1).any():
        raise InvalidPromptError(f"{name} are normalised to the frame: numbers in 0..1")
