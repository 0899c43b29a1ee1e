"""The segmenter replica's video methods without Ray: answers carry the replica, refusals come
back as values naming it, and a stream closed early (a client that hung up; Serve cancels
the generator) stops the propagation (tiny video model, random weights)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import orjson
import pytest
import torch

from bench.samples import encode_image, random_pixels
from bench.video_reference import random_video_model
from deployments.ownership import Clock
from deployments.segmenter import SegmenterReplica
from deployments.video_handoff import VideoHandoff
from deployments.video_operations import VideoCall, VideoReply
from sam3_core.architecture import TINY
from sam3_core.errors import SessionNotFoundError
from sam3_core.settings import RequestLimits, VideoSettings
from sam3_core.video_sessions import VideoSessions

FRAMES = tuple(encode_image(random_pixels(seed, 24, 32), "JPEG") for seed in range(4))


class NoVideoMetrics:
    frame_latency = SimpleNamespace(observe=lambda seconds: None)

    def record_stats(self, stats: object) -> None: ...


@pytest.fixture(scope="module")
def replica():
    replica = SegmenterReplica.__new__(SegmenterReplica)
    replica.replica = "r"
    replica._pool = ThreadPoolExecutor(2)
    replica._video = VideoSessions(
        random_video_model(TINY), VideoSettings(), RequestLimits(), torch.device("cpu")
    )
    replica._video_build = asyncio.Lock()
    replica.video_metrics = NoVideoMetrics()
    # No ring yet (as before Serve's first replica-set update): every session is its own.
    replica.video_handoff = VideoHandoff(
        "r", None, 1.0, Clock(), lambda: replica._video, replica._video_sessions
    )
    yield replica
    replica._pool.shutdown()


def test_answers_and_refusals_name_the_replica(replica: SegmenterReplica) -> None:
    start = VideoCall("start_session", "clip", None, frames=FRAMES)
    reply = asyncio.run(replica.video(start))
    assert isinstance(reply, VideoReply) and reply.replica == "r"
    assert orjson.loads(reply.body)["num_frames"] == 4
    refused = asyncio.run(replica.video(VideoCall("reset_session", "other", None)))
    assert isinstance(refused, SessionNotFoundError) and refused.replica == "r"


def test_a_stream_closed_early_stops_the_propagation(replica: SegmenterReplica) -> None:
    asyncio.run(replica.video(VideoCall("start_session", "hang-up", None, frames=FRAMES)))
    prompt = VideoCall("add_prompt", "hang-up", None, args={"frame_index": 0, "text": "cat"})
    assert isinstance(asyncio.run(replica.video(prompt)), VideoReply)
    sessions = replica._video
    before = sessions.frames_propagated

    async def hang_up_after_one_frame() -> list[object]:
        stream = replica.video_stream(VideoCall("propagate_in_video", "hang-up", None))
        items = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()
        return items

    first, line = asyncio.run(hang_up_after_one_frame())
    assert isinstance(first, VideoReply) and first.replica == "r"
    assert orjson.loads(line)["frame_index"] == 0
    assert sessions.frames_propagated - before < len(FRAMES)
    assert sessions.reset_session((None, "hang-up"))  # no longer busy

    async def unknown() -> object:
        return await replica.video_stream(VideoCall("propagate_in_video", "gone", None)).__anext__()

    refused = asyncio.run(unknown())
    assert isinstance(refused, SessionNotFoundError) and refused.replica == "r"
