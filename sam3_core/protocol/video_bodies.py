"""JSON bodies of the video routes (`/sam3/video/*`), named and shaped as the requests of
sam3's `Sam3VideoPredictor.handle_request` / `handle_stream_request`. No torch here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sam3_core.protocol.bodies import ImageInput, _Body

MaskFormat = Literal["rle", "polygon"]


class StartSessionRequest(_Body):
    video: ImageInput | None = Field(
        None, description="An MP4 or WebM file, as an image input (base64, or URL if allowed)."
    )
    frames: list[ImageInput] | None = Field(
        None, description="The video as pictures, one per frame, all of one size."
    )
    session_id: str | None = Field(None, description="Chosen by the client; else generated.")


class StartSessionResponse(BaseModel):
    session_id: str
    num_frames: int
    width: int
    height: int


class AddPromptRequest(_Body):
    session_id: str
    frame_index: int
    text: str | None = Field(None, description="A concept: every instance is detected.")
    points: list[list[float]] | None = Field(
        None, description="[[x, y], ...] normalised to 0-1; refine (or add) the object obj_id."
    )
    point_labels: list[int] | None = Field(None, description="1 positive, 0 negative.")
    bounding_boxes: list[list[float]] | None = Field(
        None, description="[[x, y, w, h], ...] normalised to 0-1, x, y the top-left corner."
    )
    bounding_box_labels: list[int] | None = Field(None, description="1 positive, 0 negative.")
    obj_id: int | None = None
    format: MaskFormat = "rle"


class PropagateRequest(_Body):
    session_id: str
    propagation_direction: Literal["both", "forward", "backward"] = "both"
    start_frame_index: int | None = None
    max_frame_num_to_track: int | None = None
    format: MaskFormat = "rle"


class RemoveObjectRequest(_Body):
    session_id: str
    obj_id: int


class SessionRequest(_Body):
    session_id: str


class ObjectOutput(BaseModel):
    obj_id: int
    score: float
    box_xywh: list[float] = Field(description="Normalised to 0-1, from the top-left corner.")
    mask: dict | list = Field(description="COCO RLE, or polygons in frame pixels.")


class FrameResponse(BaseModel):
    """`add_prompt`'s answer, and each line of `propagate_in_video`'s stream."""

    frame_index: int
    outputs: list[ObjectOutput]


class SuccessResponse(BaseModel):
    is_success: bool
