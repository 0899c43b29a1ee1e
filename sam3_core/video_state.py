"""sam3's video inference state as a session holds it: built without sam3's frame loader,
measured in bytes, and its per-frame outputs as arrays."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import numpy as np
import torch

from sam3_core.video_architecture import Sam3VideoModel
from sam3_core.video_frames import FrameStore

SessionKey = tuple[str | None, str]  # (tenant, session_id)


@dataclass(frozen=True)
class SessionInfo:
    """A started session: its key and its video's size."""

    key: SessionKey
    num_frames: int
    width: int
    height: int

    @property
    def session_id(self) -> str:
        return self.key[1]


@dataclass(frozen=True)
class VideoStats:
    sessions: int
    frame_bytes: int
    state_bytes: int
    frames_propagated: int
    budget_bytes: int = 0


@dataclass(frozen=True)
class FrameOutputs:
    """sam3's outputs on one frame.

    Attributes:
        obj_ids: (N,) int64, the objects shown on the frame.
        scores: (N,) float32, their scores.
        boxes_xywh: (N, 4) float32, normalised to the frame, top-left corner.
        masks: (N, H, W) bool, at the video's size.
    """

    frame_index: int
    obj_ids: np.ndarray
    scores: np.ndarray
    boxes_xywh: np.ndarray
    masks: np.ndarray


def new_state(model: Sam3VideoModel, frames: FrameStore, height: int, width: int) -> dict[str, Any]:
    """`Sam3VideoInference.init_state` with `frames` as the video: the same keys, built by
    the same sam3 method, without its loader (which would decode every frame at once)."""
    state: dict[str, Any] = {
        "image_size": model.image_size,
        "num_frames": len(frames),
        "orig_height": height,
        "orig_width": width,
        "constants": {},
    }
    model._construct_initial_input_batch(state, frames)
    state["tracker_inference_states"] = []
    state["tracker_metadata"] = {}
    state["feature_cache"] = {}
    state["cached_frame_outputs"] = {}
    state["action_history"] = []
    state["is_image_only"] = False
    return state


def frame_outputs(frame_index: int, outputs: dict[str, Any]) -> FrameOutputs:
    """sam3's postprocessed outputs of a frame as arrays."""

    def array(name: str, dtype: Any) -> np.ndarray:
        value = outputs[name]
        value = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return value.astype(dtype, copy=False)

    return FrameOutputs(
        frame_index=int(frame_index),
        obj_ids=array("out_obj_ids", np.int64),
        scores=array("out_probs", np.float32),
        boxes_xywh=array("out_boxes_xywh", np.float32),
        masks=array("out_binary_masks", bool),
    )


def state_nbytes(state: Any) -> int:
    """Bytes of the tensors a session's sam3 state holds (each storage counted once)."""
    seen: set[int] = set()
    containers: set[int] = set()
    total = 0
    stack = [state]
    while stack:
        value = stack.pop()
        if isinstance(value, (dict, list, tuple)) or is_dataclass(value):
            if id(value) in containers:
                continue
            containers.add(id(value))
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif is_dataclass(value) and not isinstance(value, type):
            stack.extend(getattr(value, f.name, None) for f in fields(value))
    return total
