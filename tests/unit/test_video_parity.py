"""Video sessions give sam3's own results: the same frames, prompts and random weights through
`VideoSessions` and through sam3's `Sam3VideoPredictor`, step by step (points, boxes, text;
forward, backward, both; remove and reset), and as well by a session compacted before each
request (`SAM3_VIDEO_CACHE_IDLE_SECONDS=0`).

Random weights (`bench.video_reference.random_video_model`): tracks are meaningless but
deterministic, and the weights are made to detect a few objects so that there is something
to compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from bench.video_reference import ReferencePredictor, frame_folder, random_video_model
from sam3_core.architecture import TINY
from sam3_core.settings import RequestLimits, VideoSettings
from sam3_core.video_sessions import FrameOutputs, VideoSessions, VideoSource, frame_outputs
from tests.conftest import encode_image, random_pixels

NUM_FRAMES = 3

# (name, request): each is sent to both, in order, on one session each.
SCENARIO: list[tuple[str, dict[str, Any]]] = [
    ("text", {"type": "add_prompt", "frame_index": 0, "text": "cat"}),
    ("propagate both", {"type": "propagate_in_video"}),
    (
        "points",
        {
            "type": "add_prompt",
            "frame_index": 1,
            "points": [[0.3, 0.4], [0.7, 0.6]],
            "point_labels": [1, 0],
            "obj_id": 0,
        },
    ),
    (
        "propagate forward",
        {"type": "propagate_in_video", "propagation_direction": "forward", "start_frame_index": 1},
    ),
    (
        "new object by points",
        {
            "type": "add_prompt",
            "frame_index": 1,
            "points": [[0.5, 0.5]],
            "point_labels": [1],
            "obj_id": 7,
        },
    ),
    ("remove", {"type": "remove_object", "obj_id": 0}),
    (
        "propagate backward",
        {
            "type": "propagate_in_video",
            "propagation_direction": "backward",
            "start_frame_index": 2,
        },
    ),
    ("reset", {"type": "reset_session"}),
    (
        "boxes",
        {
            "type": "add_prompt",
            "frame_index": 2,
            "bounding_boxes": [[0.1, 0.2, 0.5, 0.6]],
            "bounding_box_labels": [1],
        },
    ),
    (
        "propagate both, bounded",
        {"type": "propagate_in_video", "start_frame_index": 1, "max_frame_num_to_track": 1},
    ),
]


def _ours(sessions: VideoSessions, key: Any, request: dict[str, Any]) -> Any:
    kind = request["type"]
    args = {k: v for k, v in request.items() if k != "type"}
    if kind == "add_prompt":
        return [sessions.add_prompt(key, args.pop("frame_index"), **args)]
    if kind == "propagate_in_video":
        return list(sessions.propagate_in_video(key, **args))
    return getattr(sessions, kind)(key, **args)


def _theirs(reference: ReferencePredictor, session_id: str, request: dict[str, Any]) -> Any:
    if request["type"] == "propagate_in_video":
        lines = reference.stream(session_id=session_id, **request)
        return [frame_outputs(line["frame_index"], line["outputs"]) for line in lines]
    answer = reference.request(session_id=session_id, **request)
    if request["type"] == "add_prompt":
        return [frame_outputs(answer["frame_index"], answer["outputs"])]
    return answer["is_success"]


@pytest.fixture(scope="module")
def transcripts() -> dict[str, tuple[Any, Any]]:
    model = random_video_model(TINY)
    frames = [encode_image(random_pixels(seed, 48, 64), "JPEG") for seed in range(NUM_FRAMES)]
    sessions = VideoSessions(model, VideoSettings(), RequestLimits(), torch.device("cpu"))
    key = sessions.start_session(VideoSource(frames=tuple(frames))).key
    # Each request finds this one compacted (its caches dropped: `video_sessions._compact`).
    compacting = VideoSessions(
        model, VideoSettings(video_cache_idle_seconds=0), RequestLimits(), torch.device("cpu")
    )
    compacted = compacting.start_session(VideoSource(frames=tuple(frames))).key
    reference = ReferencePredictor(model)
    with frame_folder(frames, "jpg") as folder:
        session_id = reference.request(type="start_session", resource_path=folder)["session_id"]
    steps = {}
    for name, request in SCENARIO:
        steps[name] = (_ours(sessions, key, request), _theirs(reference, session_id, request))
        steps[f"{name}, compacted"] = (_ours(compacting, compacted, request), steps[name][1])
    reference.request(type="close_session", session_id=session_id)
    return steps


def _same(ours: list[FrameOutputs], theirs: list[FrameOutputs]) -> None:
    assert [f.frame_index for f in ours] == [f.frame_index for f in theirs]
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a.obj_ids, b.obj_ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.boxes_xywh, b.boxes_xywh)
        np.testing.assert_array_equal(a.masks, b.masks)


@pytest.mark.parametrize(
    "step", [f"{name}{how}" for name, _ in SCENARIO for how in ("", ", compacted")]
)
def test_each_step_equals_sam3s_predictor(
    transcripts: dict[str, tuple[Any, Any]], step: str
) -> None:
    ours, theirs = transcripts[step]
    if isinstance(theirs, bool):
        assert ours is True and theirs is True
        return
    _same(ours, theirs)


def test_the_scenario_compares_real_tracks(transcripts: dict[str, tuple[Any, Any]]) -> None:
    """Equal empty outputs would prove nothing: the weights find objects, and the frames
    come in the order each direction asks for ("both" from frame 0: forward only, as sam3's
    backward pass from the first frame has nothing to visit)."""
    found = [frame for frame in transcripts["propagate both"][0] if len(frame.obj_ids)]
    assert found and all(frame.masks.any() for frame in found)
    assert [f.frame_index for f in transcripts["propagate both"][0]] == [0, 1, 2]
    # Backward from frame 2, after a forward pass through it: sam3 starts at the frame before.
    assert [f.frame_index for f in transcripts["propagate backward"][0]] == [1, 0]
    assert len(transcripts["text"][0][0].obj_ids) > 0
