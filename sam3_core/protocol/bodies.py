"""The JSON bodies of the SAM3 API (SPEC §3), compatible with Roboflow's inference server and
the `inference-sdk` client: unknown keys such as `api_key` or `model_id` are ignored."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class ErrorResponse(BaseModel):
    message: str
    code: str
