"""The video operations (`/sam3/video/*`), declared once: route, body, the call the ingress
sends to the session's owner replica, and how the replica runs it on its
`sam3_core.video_sessions.VideoSessions` and encodes the answer. No torch here: the ingress
imports this module; only the replicas run the engine.

A session is routed like an image: by (tenant, session_id) on the same consistent-hash ring,
so every request of a session reaches the replica holding its state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from sam3_core.protocol.masks import mask_to_polygons, masks_to_rle
from sam3_core.protocol.video_bodies import (
    AddPromptRequest,
    FrameResponse,
    PropagateRequest,
    RemoveObjectRequest,
    SessionRequest,
    StartSessionRequest,
    StartSessionResponse,
    SuccessResponse,
)

NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class VideoCall:
    """What the ingress sends to a session's owner: the operation, whom it is for, its
    arguments (as `VideoSessions.<operation>` takes them) and, for `start_session`, the video's
    bytes (read from base64 by the ingress; decoded by the replica)."""

    operation: str
    session_id: str
    tenant: str | None
    args: dict[str, Any] = field(default_factory=dict)
    mask_format: str = "rle"
    video: bytes | None = None
    frames: tuple[bytes, ...] | None = None

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.tenant, self.session_id)

    def owner_key(self) -> str:
        """What the router hashes (`session_ring_key`)."""
        return session_ring_key(self.tenant, self.session_id)


def session_ring_key(tenant: str | None, session_id: str) -> str:
    """What the ring hashes for a session; prefixed so that a session never shares an
    image's key."""
    name = f"video:{session_id}"
    return name if tenant is None else f"{tenant}:{name}"


@dataclass(frozen=True)
class VideoReply:
    """An owner's answer: the JSON body (or, for a stream, nothing: its lines follow)."""

    replica: str
    body: bytes = b""


@dataclass(frozen=True)
class VideoOperation:
    name: str
    path: str
    summary: str
    body: type[BaseModel]
    response: type[BaseModel]
    streamed: bool = False


def video_call(operation: VideoOperation, body: Any, tenant: str | None) -> VideoCall:
    """The call for a parsed body (without `start_session`'s bytes, which the ingress adds)."""
    data = body.model_dump(exclude={"session_id", "format", "video", "frames"})
    session_id = getattr(body, "session_id", None) or uuid.uuid4().hex
    return VideoCall(
        operation=operation.name,
        session_id=session_id,
        tenant=tenant,
        args=data,
        mask_format=getattr(body, "format", "rle"),
    )


def run_video(sessions: Any, call: VideoCall) -> bytes:
    """Run a call on `VideoSessions` (in a worker thread) and encode its JSON answer."""
    if call.operation == "start_session":
        from sam3_core.video_sessions import VideoSource

        source = VideoSource(video=call.video, frames=call.frames)
        info = sessions.start_session(source, call.session_id, call.tenant)
        return orjson.dumps(
            {
                "session_id": info.session_id,
                "num_frames": info.num_frames,
                "width": info.width,
                "height": info.height,
            }
        )
    if call.operation == "add_prompt":
        args = dict(call.args)
        frame = sessions.add_prompt(call.key, args.pop("frame_index"), **args)
        return frame_json(frame, call.mask_format)
    success = getattr(sessions, call.operation)(call.key, **call.args)
    return orjson.dumps({"is_success": bool(success)})


def stream_video(sessions: Any, call: VideoCall) -> Iterator[bytes]:
    """`propagate_in_video`'s frames as NDJSON lines, each encoded as it is computed. The
    session is checked before the first frame (so that a refusal is an HTTP error)."""
    frames = sessions.propagate_in_video(call.key, **call.args)
    return _lines(frames, call.mask_format)


def _lines(frames: Iterator[Any], mask_format: str) -> Iterator[bytes]:
    try:
        for frame in frames:
            yield frame_json(frame, mask_format) + b"\n"
    finally:
        frames.close()  # closing the lines (a hang-up) stops the propagation at once


def frame_json(frame: Any, mask_format: str) -> bytes:
    """A frame's outputs (`sam3_core.video_sessions.FrameOutputs`) as `FrameResponse` JSON."""
    if mask_format == "polygon":
        masks: list[Any] = [mask_to_polygons(mask) for mask in frame.masks]
    else:
        masks = masks_to_rle(frame.masks)
    outputs = [
        {
            "obj_id": int(obj_id),
            "score": float(score),
            "box_xywh": [float(v) for v in box],
            "mask": mask,
        }
        for obj_id, score, box, mask in zip(
            frame.obj_ids, frame.scores, frame.boxes_xywh, masks, strict=True
        )
    ]
    return orjson.dumps({"frame_index": frame.frame_index, "outputs": outputs})


def _operation(name: str, summary: str, body: type[BaseModel], response: type[BaseModel],
               streamed: bool = False) -> VideoOperation:  # fmt: skip
    return VideoOperation(name, f"/sam3/video/{name}", summary, body, response, streamed)


VIDEO_OPERATIONS: tuple[VideoOperation, ...] = (
    _operation(
        "start_session",
        "Start a tracking session on a video (MP4/WebM) or its frames.",
        StartSessionRequest,
        StartSessionResponse,
    ),
    _operation(
        "add_prompt",
        "Text, boxes or points on a frame; answers the frame's objects.",
        AddPromptRequest,
        FrameResponse,
    ),
    _operation(
        "propagate_in_video",
        "Track the objects through the video: one JSON line per frame, as computed.",
        PropagateRequest,
        FrameResponse,
        streamed=True,
    ),
    _operation("remove_object", "Stop tracking an object.", RemoveObjectRequest, SuccessResponse),
    _operation(
        "reset_session",
        "Drop every prompt and track of a session.",
        SessionRequest,
        SuccessResponse,
    ),
    _operation("close_session", "Close a session (idempotent).", SessionRequest, SuccessResponse),
)
