"""Concept prompts (Roboflow's `/sam3/concept_segment` format) and their conversion
to sam3's find-queries. No torch here: the ingress validates them before routing.

A prompt is a text ("car"), box exemplars (`boxes` with `box_labels`, 1 positive, 0
negative), or both (a visual prompt whose text is its hint). A box is `{x, y, width, height}`
with `x, y` its **top-left corner** (unlike `visual_segment`'s centre), or `{x0, y0, x1, y1}`,
in original-image pixels; the two forms may be mixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, StrictBool, StrictInt, model_validator

from sam3_core.errors import InvalidPromptError
from sam3_core.prompts import ClosedModel, check_coordinate, outside_image

# sam3's query text for box exemplars without a text (`Sam3Processor.add_geometric_prompt`).
VISUAL_QUERY_TEXT = "visual"


class ExemplarBox(ClosedModel):
    """`{x, y, width, height}` (x, y: top-left) or `{x0, y0, x1, y1}`, in pixels."""

    noun: ClassVar[str] = "an exemplar box"

    x: float | None = None
    y: float | None = None
    width: float | None = None
    height: float | None = None
    x0: float | None = None
    y0: float | None = None
    x1: float | None = None
    y1: float | None = None

    @model_validator(mode="after")
    def _one_complete_form(self) -> ExemplarBox:
        xywh = (self.x, self.y, self.width, self.height)
        xyxy = (self.x0, self.y0, self.x1, self.y1)
        if not all(v is not None for v in xywh) and not all(v is not None for v in xyxy):
            raise ValueError("a box is {x, y, width, height} or {x0, y0, x1, y1}")
        return self

    def xyxy(self) -> tuple[float, float, float, float]:
        """A box carrying both complete forms is read as {x, y, width, height}, as Roboflow's
        server reads it (its `Union[Box, BoxXYXY]` validates the XYWH form first)."""
        x, y, w, h = self.x, self.y, self.width, self.height
        if x is not None and y is not None and w is not None and h is not None:
            return (x, y, x + w, y + h)
        return (self.x0, self.y0, self.x1, self.y1)  # type: ignore[return-value]


class ConceptPrompt(ClosedModel):
    """One concept: a text, box exemplars, or both. One result per prompt."""

    noun: ClassVar[str] = "a concept prompt"

    type: str | None = Field(None, description="Hint only: 'text' or 'visual'.")
    text: str | None = Field(None, description="The concept, e.g. 'car'.")
    boxes: list[ExemplarBox] | None = Field(
        None, description="Exemplar boxes: {x, y, width, height} (top-left) or {x0, y0, x1, y1}."
    )
    box_labels: list[StrictBool | StrictInt] | None = Field(
        None, description="One per box: 1 (or true) positive, 0 (or false) negative."
    )
    output_prob_thresh: float | None = Field(
        None, description="This prompt's score threshold; default: the request's."
    )

    @property
    def is_visual(self) -> bool:
        return bool(self.boxes)

    @property
    def kind(self) -> Literal["text", "visual"]:
        return "visual" if self.is_visual else "text"

    @property
    def query_text(self) -> str:
        """The text sam3 encodes for this prompt: its own, else "visual"."""
        return self.text if self.text else VISUAL_QUERY_TEXT

    def labels(self) -> list[bool]:
        if self.box_labels is None:
            return [True] * len(self.boxes or ())
        return [bool(label) for label in self.box_labels]


def legacy_prompt(body: dict[str, Any]) -> dict[str, Any]:
    """Roboflow's legacy single-prompt fields (`text`, `boxes`, `box_labels` at the top level)
    as one prompt, for a body without `prompts`."""
    if body.get("prompts") is None and any(
        body.get(k) is not None for k in ("text", "boxes", "box_labels")
    ):
        prompt = {k: body[k] for k in ("text", "boxes", "box_labels") if body.get(k) is not None}
        prompt["type"] = "visual" if body.get("boxes") else "text"
        return {**body, "prompts": [prompt]}
    return body


def validate_concept_prompts(
    prompts: list[ConceptPrompt],
    *,
    output_prob_thresh: float,
    nms_iou_threshold: float | None,
    max_prompts: int,
    max_boxes: int,
    max_text_length: int,
) -> None:
    """Values the schema lets through but the model cannot take. Raises InvalidPromptError
    naming the field (`prompts[1].boxes[0].width`)."""
    _check_fraction(output_prob_thresh, "output_prob_thresh")
    if nms_iou_threshold is not None:
        _check_fraction(nms_iou_threshold, "nms_iou_threshold")
    if not prompts:
        raise InvalidPromptError("prompts: send at least one prompt (a text or box exemplars)")
    if len(prompts) > max_prompts:
        raise InvalidPromptError(f"prompts: {len(prompts)} prompts, the limit is {max_prompts}")
    total_boxes = sum(len(p.boxes or ()) for p in prompts)
    if total_boxes > max_boxes:
        raise InvalidPromptError(
            f"prompts: {total_boxes} boxes in the request, the limit is {max_boxes}"
        )
    for i, prompt in enumerate(prompts):
        where = f"prompts[{i}]"
        if prompt.output_prob_thresh is not None:
            _check_fraction(prompt.output_prob_thresh, f"{where}.output_prob_thresh")
        if prompt.text is not None:
            if len(prompt.text) > max_text_length:
                raise InvalidPromptError(
                    f"{where}.text: {len(prompt.text)} characters, the limit is {max_text_length}"
                )
            if not prompt.text.strip() and not prompt.boxes:
                raise InvalidPromptError(f"{where}.text: empty")
        if not prompt.text and not prompt.boxes:
            raise InvalidPromptError(f"{where}: a prompt needs a text or boxes")
        boxes = prompt.boxes or []
        if prompt.box_labels is not None:
            if len(prompt.box_labels) != len(boxes):
                raise InvalidPromptError(
                    f"{where}.box_labels: {len(prompt.box_labels)} labels for {len(boxes)} boxes"
                )
            for j, label in enumerate(prompt.box_labels):
                if int(label) not in (0, 1):
                    raise InvalidPromptError(f"{where}.box_labels[{j}]: must be 0 or 1")
        for j, box in enumerate(boxes):
            x0, y0, x1, y1 = box.xyxy()
            for name, value in zip(("x0", "y0", "x1", "y1"), (x0, y0, x1, y1), strict=True):
                check_coordinate(value, f"{where}.boxes[{j}].{name}")
            if x1 <= x0 or y1 <= y0:
                raise InvalidPromptError(f"{where}.boxes[{j}]: width and height must be > 0")


def check_exemplars_inside(prompts: list[ConceptPrompt], orig_hw: tuple[int, int]) -> None:
    """Every exemplar box overlaps the image (one that crosses an edge is kept as sent).
    Raises InvalidPromptError naming the box and the image's size."""
    for i, prompt in enumerate(prompts):
        for j, box in enumerate(prompt.boxes or ()):
            if outside_image(box.xyxy(), orig_hw):
                x0, y0, x1, y1 = box.xyxy()
                raise InvalidPromptError(
                    f"prompts[{i}].boxes[{j}]: x0, y0, x1, y1 = {x0:g}, {y0:g}, {x1:g}, {y1:g} "
                    f"misses the image ({orig_hw[1]}x{orig_hw[0]} pixels); box x, y is its "
                    "top-left corner here"
                )


def _check_fraction(value: float, field: str) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidPromptError(f"{field}: must be between 0 and 1")


@dataclass(frozen=True)
class ExemplarArrays:
    """The box exemplars of P prompts, padded to a rectangle.

    Attributes:
        boxes: (P, N, 4) float32 normalised cx, cy, w, h (sam3's box format); N = the most
            boxes of any prompt (0 when no prompt has boxes).
        labels: (P, N) bool, True for a positive exemplar.
        padding: (P, N) bool, True where a prompt has no box.
    """

    boxes: np.ndarray
    labels: np.ndarray
    padding: np.ndarray


def exemplar_arrays(prompts: list[ConceptPrompt], orig_hw: tuple[int, int]) -> ExemplarArrays:
    """Boxes in pixels → sam3's normalised cx, cy, w, h, as `Sam3Processor` is given them."""
    height, width = orig_hw
    count = max((len(p.boxes or ()) for p in prompts), default=0)
    boxes = np.zeros((len(prompts), count, 4), dtype=np.float32)
    labels = np.zeros((len(prompts), count), dtype=bool)
    padding = np.ones((len(prompts), count), dtype=bool)
    for row, prompt in enumerate(prompts):
        for col, (box, label) in enumerate(zip(prompt.boxes or (), prompt.labels(), strict=True)):
            x0, y0, x1, y1 = box.xyxy()
            boxes[row, col] = (
                (x0 + x1) / 2 / width,
                (y0 + y1) / 2 / height,
                (x1 - x0) / width,
                (y1 - y0) / height,
            )
            labels[row, col] = label
            padding[row, col] = False
    return ExemplarArrays(boxes=boxes, labels=labels, padding=padding)
