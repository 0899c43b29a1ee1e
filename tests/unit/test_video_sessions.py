"""Video sessions' limits, errors and memory (`sam3_core.video_sessions`), on the tiny video
model with random weights. Results against sam3's predictor: `test_video_parity.py`."""

from __future__ import annotations

import gc
import io
import time
import weakref

import av
import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from bench.video import rss_over_cycles
from bench.video_reference import random_video_model
from sam3_core.architecture import TINY
from sam3_core.errors import (
    InvalidImageError,
    InvalidPromptError,
    PropagationError,
    SessionBusyError,
    SessionNotFoundError,
    VideoCapacityError,
    VideoTooLargeError,
)
from sam3_core.settings import RequestLimits, VideoSettings
from sam3_core.video_sessions import VideoSessions, VideoSource
from tests.conftest import encode_image, random_pixels

FRAMES = tuple(encode_image(random_pixels(seed, 48, 64), "JPEG") for seed in range(2))


@pytest.fixture(scope="module")
def model():
    return random_video_model(TINY)


def sessions_of(model, **settings: object) -> VideoSessions:
    return VideoSessions(model, VideoSettings(**settings), RequestLimits(), torch.device("cpu"))


def test_unknown_and_closed_sessions_are_not_found(model) -> None:
    sessions = sessions_of(model)
    with pytest.raises(SessionNotFoundError):
        sessions.reset_session((None, "nope"))
    info = sessions.start_session(VideoSource(frames=FRAMES), session_id="clip-1")
    assert (info.session_id, info.num_frames, info.width, info.height) == ("clip-1", 2, 64, 48)
    assert sessions.close_session(info.key) and sessions.close_session(info.key)  # idempotent
    with pytest.raises(SessionNotFoundError, match="clip-1"):
        sessions.add_prompt(info.key, 0, text="cat")


def test_tenants_do_not_see_each_others_sessions(model) -> None:
    sessions = sessions_of(model)
    sessions.start_session(VideoSource(frames=FRAMES), session_id="same", tenant="a")
    with pytest.raises(SessionNotFoundError):
        sessions.reset_session(("b", "same"))
    assert sessions.reset_session(("a", "same"))


def test_sessions_per_replica_are_bounded(model) -> None:
    sessions = sessions_of(model, video_max_sessions=2)
    for _ in range(2):
        sessions.start_session(VideoSource(frames=FRAMES))
    with pytest.raises(VideoCapacityError, match="SAM3_VIDEO_MAX_SESSIONS=2"):
        sessions.start_session(VideoSource(frames=FRAMES))


def test_byte_budget_refuses_a_video_that_does_not_fit(model) -> None:
    sessions = sessions_of(model, video_session_bytes=sum(map(len, FRAMES)) * 3 // 2)
    sessions.start_session(VideoSource(frames=FRAMES))
    with pytest.raises(VideoCapacityError, match="SAM3_VIDEO_SESSION_BYTES"):
        sessions.start_session(VideoSource(frames=FRAMES))


def test_frames_and_bytes_per_video_are_bounded(model) -> None:
    with pytest.raises(VideoTooLargeError, match="SAM3_VIDEO_MAX_FRAMES=1"):
        sessions_of(model, video_max_frames=1).start_session(VideoSource(frames=FRAMES))
    with pytest.raises(VideoTooLargeError, match="SAM3_VIDEO_MAX_VIDEO_BYTES=100"):
        sessions_of(model, video_max_video_bytes=100).start_session(VideoSource(frames=FRAMES))
    with pytest.raises(InvalidImageError, match="differ in size"):
        odd = (FRAMES[0], encode_image(random_pixels(5, 40, 64), "JPEG"))
        sessions_of(model).start_session(VideoSource(frames=odd))


def test_idle_sessions_expire(model) -> None:
    sessions = sessions_of(model, video_idle_seconds=0.05)
    info = sessions.start_session(VideoSource(frames=FRAMES))
    time.sleep(0.1)
    with pytest.raises(SessionNotFoundError):
        sessions.reset_session(info.key)
    assert sessions.stats().sessions == 0


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"frame_index": 2, "text": "cat"}, "frame_index 2 is outside 0..1"),
        ({"frame_index": 0}, "send text, points or bounding_boxes"),
        ({"frame_index": 0, "points": [[0.5, 0.5]], "point_labels": [1]}, "obj_id"),
        (
            {"frame_index": 0, "points": [[0.5, 1.5]], "point_labels": [1], "obj_id": 1},
            "numbers in 0..1",
        ),
        ({"frame_index": 0, "points": [[0.5, 0.5]], "point_labels": [], "obj_id": 1}, "one label"),
        (
            {"frame_index": 0, "points": [[0.5, 0.5]], "point_labels": [1], "obj_id": 1},
            "add a text or box prompt on frame 0",
        ),
        (
            {
                "frame_index": 0,
                "bounding_boxes": [[0.5, 0.5, 0.6, 0.1]],
                "bounding_box_labels": [1],
            },
            "x \\+ w",
        ),
        (
            {"frame_index": 0, "bounding_boxes": [[0.1, 0.1, 0.2]], "bounding_box_labels": [1]},
            "4 numbers",
        ),
        (
            {"frame_index": 0, "text": "cat", "points": [[0.5, 0.5]], "point_labels": [1]},
            "points go alone",
        ),
    ],
)
def test_bad_prompts_are_refused_by_name(model, prompt: dict, message: str) -> None:
    sessions = sessions_of(model)
    key = sessions.start_session(VideoSource(frames=FRAMES)).key
    with pytest.raises(InvalidPromptError, match=message):
        sessions.add_prompt(key, prompt.pop("frame_index"), **prompt)
    with pytest.raises(InvalidPromptError, match="propagation_direction"):
        sessions.propagate_in_video(key, "sideways")


def test_propagation_is_exclusive_stops_on_hang_up_and_close_returns_memory(model) -> None:
    sessions = sessions_of(model)
    key = sessions.start_session(VideoSource(frames=FRAMES)).key
    sessions.add_prompt(key, 0, text="cat")
    stream = sessions.propagate_in_video(key, "forward")
    first = next(stream)
    assert first.frame_index == 0
    with pytest.raises(SessionBusyError):
        sessions.add_prompt(key, 1, text="dog")
    with pytest.raises(SessionBusyError):
        next(sessions.propagate_in_video(key, "forward"))
    stream.close()  # the client hung up: the session propagates again
    frames = list(sessions.propagate_in_video(key, "forward"))
    assert [f.frame_index for f in frames] == [0, 1]
    session = sessions._sessions[key]
    tensors = [weakref.ref(t) for t in _tensors(session.state)]
    assert tensors and sessions.stats().state_bytes > 0
    sessions.close_session(key)
    del session
    gc.collect()
    assert [ref for ref in tensors if ref() is not None] == []
    stats = sessions.stats()
    assert (stats.sessions, stats.frame_bytes, stats.state_bytes) == (0, 0, 0)


def test_a_compacted_session_holds_less_and_keeps_what_box_prompts_need(model) -> None:
    """Compaction drops sam3's per-frame caches; the detector's outputs stay once a frame has
    box prompts (sam3 computed them ahead with the frame before's boxes). That it changes
    no answer, boxes or not: `test_video_parity.py`, compacted before each request."""
    sessions = sessions_of(model, video_cache_idle_seconds=3600)
    key = sessions.start_session(VideoSource(frames=FRAMES)).key
    sessions.add_prompt(key, 0, text="cat")
    list(sessions.propagate_in_video(key, "forward"))
    cache = sessions._sessions[key].state["feature_cache"]
    hot = sessions.session_bytes(key)
    assert "multigpu_buffer" in cache and any(isinstance(k, int) for k in cache)
    assert sessions.compact(key) < hot
    assert set(cache) <= {"text", "tracking_bounds"}
    assert sessions.compact(key) == sessions.session_bytes(key)
    sessions.add_prompt(key, 1, bounding_boxes=[[0.1, 0.2, 0.5, 0.6]], bounding_box_labels=[1])
    sessions.compact(key)
    assert "multigpu_buffer" in cache and not any(isinstance(k, int) for k in cache)


def test_sessions_compact_before_one_is_refused_for_bytes(model) -> None:
    """A budget that a prompted session fits in only once compacted: a second session
    starts, the first compacted for it, and the first still answers; a prompt that takes
    them over the budget compacts the other."""
    probe = sessions_of(model, video_cache_idle_seconds=3600)
    key = probe.start_session(VideoSource(frames=FRAMES)).key
    probe.add_prompt(key, 0, text="cat")
    hot = probe.session_bytes(key)
    small = probe.compact(key)
    sessions = sessions_of(
        model, video_cache_idle_seconds=3600, video_session_bytes=small + (hot - small) // 2
    )
    first = sessions.start_session(VideoSource(frames=FRAMES)).key
    sessions.add_prompt(first, 0, text="cat")
    assert sessions.session_bytes(first) == hot
    second = sessions.start_session(VideoSource(frames=FRAMES)).key
    assert sessions.session_bytes(first) == small
    assert sessions.add_prompt(first, 1, text="cat").frame_index == 1
    assert sessions.holds(second) and sessions.session_bytes(first) > small
    sessions.add_prompt(second, 0, text="cat")  # over the budget: not refused, first compacted
    assert sessions.session_bytes(first) == small


def test_clicks_after_a_first_pass_cut_short_are_refused_not_a_broken_stream(model) -> None:
    sessions = sessions_of(model)
    key = sessions.start_session(VideoSource(frames=FRAMES)).key
    assert [f.frame_index for f in sessions.propagate_in_video(key, "forward", 0, 0)] == [0]
    sessions.add_prompt(key, 0, points=[[0.25, 0.5]], point_labels=[1], obj_id=1)
    with pytest.raises(PropagationError, match="reset_session"):
        list(sessions.propagate_in_video(key, "forward"))
    sessions.reset_session(key)  # and the session still works
    assert [f.frame_index for f in sessions.propagate_in_video(key, "forward", 0)] == [0, 1]


def test_closing_a_session_stops_its_propagation(model) -> None:
    sessions = sessions_of(model)
    key = sessions.start_session(VideoSource(frames=FRAMES)).key
    with pytest.raises(InvalidPromptError, match="no prompt on any frame"):
        sessions.propagate_in_video(key, "forward")
    sessions.add_prompt(key, 0, text="cat")
    stream = sessions.propagate_in_video(key, "forward")
    next(stream)
    sessions.close_session(key)
    with pytest.raises(SessionNotFoundError):
        next(stream)


def _mp4(frames: list[np.ndarray]) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


def test_a_video_file_is_kept_as_frames_resized_like_sam3s_image_folders(model) -> None:
    video = _mp4([random_pixels(seed, 48, 64) for seed in range(3)])
    sessions = sessions_of(model)
    info = sessions.start_session(VideoSource(video=video))
    assert (info.num_frames, info.width, info.height) == (3, 64, 48)
    store = sessions._sessions[info.key].frames
    with av.open(io.BytesIO(video)) as container:
        decoded = [frame.to_image() for frame in container.decode(video=0)]
    for index, picture in enumerate(decoded):
        expected = np.asarray(TF.resize(picture, size=(TINY.image_size, TINY.image_size)))
        kept = cv2.imdecode(np.frombuffer(store.encoded.frames[index], np.uint8), 1)[:, :, ::-1]
        np.testing.assert_array_equal(kept, expected)
        normalised = (TF.to_tensor(expected).half() - 0.5) / 0.5
        torch.testing.assert_close(store[index], normalised, rtol=0, atol=0)
    assert store.nbytes < 3 * TINY.image_size**2 * 3  # compressed, not raw pixels
    with pytest.raises(VideoTooLargeError, match="SAM3_VIDEO_MAX_FRAMES=2"):
        sessions_of(model, video_max_frames=2).start_session(VideoSource(video=video))
    with pytest.raises(InvalidImageError, match="MP4/WebM"):
        sessions.start_session(VideoSource(video=b"not a video at all"))


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def test_five_sessions_opened_propagated_and_closed_leave_the_process_as_it_was(model) -> None:
    """RSS (psutil) after five more open/prompt/propagate/close cycles, past a first that
    warms allocators and sam3's lazily built buffers, grows by less than a quarter of what
    one session held: closed sessions' memory is handed back (sam3 issue #305)."""
    sessions = sessions_of(model)
    frames = tuple(encode_image(random_pixels(seed, 96, 128), "JPEG") for seed in range(3))
    sizes, before, after = rss_over_cycles(sessions, frames, cycles=5)
    held, grown = max(sizes), after - before
    assert held > 2 * 2**20, "a session must hold enough to see a leak"
    assert grown < held / 4, f"RSS grew {grown / 2**20:.1f} MiB; a session held {held / 2**20:.1f}"
