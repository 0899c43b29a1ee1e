"""The JSON bodies of the SAM3 API (embed, visual and concept segmentation), compatible with
Roboflow's inference server and the `inference-sdk` client: unknown top-level keys such as
`api_key` or `model_id` are ignored; inside a prompt object an unknown key is a mistake,
refused (`prompts.ClosedModel`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from sam3_core.concept_prompts import ConceptPrompt, ExemplarBox, legacy_prompt
from sam3_core.prompts import PromptSet

# A 4x4 PNG: the examples of the OpenAPI document (Swagger's "Try it out", schemathesis).
EXAMPLE_IMAGE = {
    "type": "base64",
    "value": (
        "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAFElEQVR4"
        "2mM8ISfHAANMDEgANwcANHYBDH++Xo4AAAAASUVORK5CYII="
    ),
}
EXAMPLE_PROMPTS = {"prompts": [{"points": [{"x": 1, "y": 2, "positive": True}]}]}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageInput(_Body):
    """`{"type": "base64", "value": "..."}`; `url` only where the operator enabled it."""

    type: str = Field(description="base64, or url where SAM3_ALLOW_URL_INPUT is on.")
    value: str = Field(
        description="Base64 of the image file (a data:image/...;base64, prefix is allowed), "
        "or its http(s) URL."
    )


class EmbedImageRequest(_Body):
    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"examples": [{"image": EXAMPLE_IMAGE, "image_id": "a"}]}
    )

    image: ImageInput | None = Field(None, description="The image; optional if image_id is cached.")
    image_id: str | None = Field(
        None, description="Cache key; without one, the SHA-256 of the image's bytes."
    )


class ImageEmbeddingRequest(EmbedImageRequest):
    """`POST /sam3/embedding`: as `embed_image`, and the wire form of the arrays."""

    encoding: Literal["float16", "int8", "float32"] = Field(
        "float16",
        description="float16 (default), int8 (per-channel scales: half the bytes), or float32.",
    )


class EmbedImageResponse(BaseModel):
    image_id: str
    time: float = Field(description="Seconds spent in the service.")


class VisualSegmentRequest(_Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"image": EXAMPLE_IMAGE, "prompts": EXAMPLE_PROMPTS, "format": "rle"},
                {"image": EXAMPLE_IMAGE, "image_id": "a", "prompts": EXAMPLE_PROMPTS},
            ]
        },
    )

    image: ImageInput | None = Field(None, description="The image; optional if image_id is cached.")
    image_id: str | None = Field(None, description="Cache key of an embedded image.")
    prompts: PromptSet = Field(
        default_factory=PromptSet,
        description='Prompts, one per object: {"prompts": [...]}, a bare list of prompts, or '
        "one prompt object. None: one prediction, the model's most prominent mask.",
    )
    multimask_output: bool = Field(
        True, description="Let the decoder propose 3 masks per prompt; the best is returned."
    )
    format: Literal["json", "polygon", "rle", "binary"] = Field(
        "json",
        description="json and polygon give polygons; rle gives COCO RLE; binary gives "
        "Roboflow's NumPy .npz (application/octet-stream): `masks` (P, H, W) bool and "
        "`low_res_masks` (P, 288, 288) float32 logits.",
    )
    save_logits_to_cache: bool = Field(False, description="Keep this request's low-res logits.")
    load_logits_from_cache: bool = Field(
        False, description="Seed the decoder with the logits of the best earlier prompt set."
    )


class RleMask(BaseModel):
    size: list[int] = Field(description="[H, W]")
    counts: str = Field(description="COCO compressed RLE, column-major.")


Polygons = list[list[list[int]]]


class Prediction(BaseModel):
    masks: Polygons | RleMask = Field(
        description="polygon: one list of [x, y] per external contour ([[]] when empty); "
        "rle: COCO RLE of the mask."
    )
    confidence: float
    format: Literal["polygon", "rle"]


class VisualSegmentResponse(BaseModel):
    predictions: list[Prediction]
    time: float = Field(description="Seconds spent in the service.")


EXAMPLE_CONCEPT_PROMPTS = [
    {"type": "text", "text": "cat"},
    {"type": "visual", "boxes": [{"x": 0, "y": 0, "width": 2, "height": 2}], "box_labels": [1]},
]


class ConceptSegmentRequest(_Body):
    """Roboflow's `/sam3/concept_segment` body: `prompts`, or the legacy single prompt
    (`text`, `boxes`, `box_labels` at the top level)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"image": EXAMPLE_IMAGE, "prompts": EXAMPLE_CONCEPT_PROMPTS},
                {"image": EXAMPLE_IMAGE, "image_id": "a", "text": "cat", "format": "rle"},
            ]
        },
    )

    image: ImageInput | None = Field(
        None, description="The image; optional if image_id is cached on its owner."
    )
    image_id: str | None = Field(None, description="Cache key, as for visual_segment.")
    prompts: list[ConceptPrompt] | None = Field(
        None, description="One result per prompt, in order; all run in one detector pass."
    )
    output_prob_thresh: float = Field(
        0.5, description="Keep instances scoring at least this (a prompt's own value wins)."
    )
    nms_iou_threshold: float | None = Field(
        None, description="When set: mask NMS across all prompts' instances (higher score kept)."
    )
    format: Literal["json", "polygon", "rle", "binary"] = Field(
        "polygon",
        description="json and polygon give polygons; rle gives COCO RLE; binary gives a NumPy "
        ".npz (application/octet-stream) of every instance, prompts in order: `masks` (N, H, "
        "W) bool, `scores` (N,) float32, `boxes` (N, 4) float32 XYXY pixels and "
        "`prompt_index` (N,) int32.",
    )
    text: str | None = Field(None, description="Legacy single prompt: its text.")
    boxes: list[ExemplarBox] | None = Field(None, description="Legacy single prompt: boxes.")
    box_labels: list[StrictBool | StrictInt] | None = Field(
        None, description="Legacy single prompt: box labels."
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_prompt(cls, value: Any) -> Any:
        return legacy_prompt(value) if isinstance(value, dict) else value


class PromptEcho(BaseModel):
    prompt_index: int
    type: Literal["text", "visual"]
    text: str | None
    num_boxes: int


class PromptResult(BaseModel):
    prompt_index: int
    echo: PromptEcho
    predictions: list[Prediction] = Field(description="One per instance found.")


class ConceptSegmentResponse(BaseModel):
    prompt_results: list[PromptResult]
    time: float = Field(description="Seconds spent in the service.")


class ModelResponse(BaseModel):
    """What the service serves, for a client to say so (the page does)."""

    weights: Literal["checkpoint", "demo", "random"] = Field(
        description="SAM3's weights (or weights fine-tuned from them), a demo model trained "
        "on synthetic shapes (not SAM3), or random weights (masks are noise)."
    )
    name: str = Field(description='e.g. "sam3.pt", "demo:shapes", "random:tiny"')
    description: str
    architecture: str = Field(description='"full" for SAM3; "tiny" for the demo model')
    concepts: Literal["trained", "untrained", "off"] = Field(
        description="Concept segmentation: its detector trained, untrained (it finds nothing "
        "meant), or off (SAM3_CONCEPTS=false)."
    )
    held_out: dict[str, float] = Field(
        description="A demo model's held-out scores from its training record: mean IoU from a "
        "centre click, a box and a corrective click, concept F1, tracking J."
    )


class ReadyResponse(BaseModel):
    status: Literal["ready"]


class ErrorResponse(BaseModel):
    message: str
    code: str
