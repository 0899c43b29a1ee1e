"""A video session moved to another engine (`sam3_core/video_handoff.py`,
`VideoSessions.export_session` / `adopt_session`) answers as one that never moved: the same
masks, scores and object ids for later prompts, propagations and removals. Tiny video model,
random weights (two models built alike, as on two replicas); the state crosses as a pickled
copy, as through Ray. And the replicas' side (`deployments/video_handoff.py`) without Ray:
sessions follow ring changes, requests wait for a moving session, a crash loses them.
On Ray: `tests/integration/test_video.py`."""

from __future__ import annotations

import asyncio
import pickle
import time

import numpy as np
import orjson
import pytest
import torch

from deployments.ownership import Clock
from deployments.ring import Ring
from deployments.video_handoff import SessionMovingError, VideoHandoff
from deployments.video_operations import VideoCall, run_video, session_ring_key
from sam3_core.architecture import TINY
from sam3_core.errors import SessionMovedError, SessionNotFoundError
from sam3_core.sam3_compat import clip_vocabulary
from sam3_core.settings import RequestLimits, VideoSettings
from sam3_core.video_architecture import build_video_model
from sam3_core.video_sessions import FrameOutputs, VideoSessions, VideoSource
from tests.conftest import encode_image, random_pixels

FRAMES = tuple(encode_image(random_pixels(seed, 48, 64), "JPEG") for seed in range(3))


@pytest.fixture(scope="module")
def replicas() -> tuple[VideoSessions, VideoSessions]:
    def sessions() -> VideoSessions:
        # Detecting nothing (plain random weights), the text prompt costs little; the points
        # make the tracked objects.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_video_model(TINY, clip_vocabulary())
        return VideoSessions(model, VideoSettings(), RequestLimits(), torch.device("cpu"))

    return sessions(), sessions()


def same(a: list[FrameOutputs], b: list[FrameOutputs]) -> None:
    assert [f.frame_index for f in a] == [f.frame_index for f in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.obj_ids, y.obj_ids)
        np.testing.assert_array_equal(x.masks, y.masks)
        np.testing.assert_array_equal(x.scores, y.scores)


def through_ray(value: object) -> object:
    return pickle.loads(pickle.dumps(value))


def test_a_moved_session_answers_as_one_that_never_moved(replicas) -> None:
    here, there = replicas
    stay = here.start_session(VideoSource(frames=FRAMES), session_id="stays").key
    move = here.start_session(VideoSource(frames=FRAMES), session_id="moves").key
    for key in (stay, move):
        first = here.add_prompt(key, 0, text="object")
        list(here.propagate_in_video(key, "both"))
    obj_id = int(first.obj_ids[0]) if len(first.obj_ids) else 1
    assert len(first.obj_ids) == 0, "the text prompt finds nothing: points make the objects"

    state = here.export_session(move, wait_s=1.0)
    assert state is not None and not here.holds(move)
    with pytest.raises(SessionNotFoundError):
        here.reset_session(move)
    assert there.adopt_session(through_ray(state))

    def later(sessions: VideoSessions, key) -> list[FrameOutputs]:
        frames = [sessions.add_prompt(key, 1, points=[[0.4, 0.6]], point_labels=[1], obj_id=obj_id)]
        frames += sessions.propagate_in_video(key, "both")
        frames.append(sessions.add_prompt(key, 2, points=[[0.7, 0.2]], point_labels=[1],
                                          obj_id=obj_id + 1))  # fmt: skip
        sessions.remove_object(key, obj_id)
        return [*frames, *sessions.propagate_in_video(key, "backward", start_frame_index=2)]

    expected = later(here, stay)
    assert any(f.masks.any() for f in expected), "the prompts must give masks to compare"
    same(later(there, move), expected)
    assert there.export_session((None, "nope"), wait_s=0) is None
    here.close_session(stay)
    there.close_session(move)


def test_a_newer_session_of_the_same_id_is_kept_and_a_move_stops_a_propagation(replicas):
    here, there = replicas
    key = here.start_session(VideoSource(frames=FRAMES), session_id="clip").key
    here.add_prompt(key, 0, text="object")
    stream = here.propagate_in_video(key, "forward")
    next(stream)
    state = here.export_session(key, wait_s=0.0)  # the stream is not read: it is stopped
    with pytest.raises(SessionMovedError, match="propagate again"):
        next(stream)
    assert state is not None
    there.stamp = lambda: state.version + 1  # its clock has seen the sender's (Lamport)
    there.start_session(VideoSource(frames=FRAMES[:2]), session_id="clip")  # started since
    assert not there.adopt_session(through_ray(state))
    assert there.stats().sessions == 1 and there.add_prompt(key, 1, text="x").frame_index == 1
    there.close_session(key)


class Peers:
    """`deployments.peers.Peers` between in-process `VideoHandoff`s (arguments pickled)."""

    def __init__(self, world: dict[str, VideoHandoff], dead: set[str]) -> None:
        self.world, self.dead = world, dead

    async def call(self, replica: str, method: str, *args: object, timeout_s: float) -> object:
        if replica in self.dead:
            raise ConnectionError(replica)
        return await self.world[replica].answer(method, through_ray(args))

    async def notify(self, replica: str, method: str, *args: object, timeout_s: float) -> None:
        await self.call(replica, method, *args, timeout_s=timeout_s)

    async def alive(self, replica: str) -> bool:
        return replica in self.world and replica not in self.dead


def test_sessions_follow_the_ring_wait_when_moving_and_are_lost_with_a_crash(replicas) -> None:
    """b leaves gracefully: its sessions go to a, where requests wait for them; then c
    crashes: its sessions are not found (at once: c is gone), never served stale."""
    world: dict[str, VideoHandoff] = {}
    dead: set[str] = set()
    held = {"a": replicas[0], "b": replicas[1], "c": replicas[1]}

    async def build() -> VideoSessions:
        raise AssertionError("built already")

    for name in ("a", "b"):
        world[name] = VideoHandoff(
            name, Peers(world, dead), 5.0, Clock(), lambda n=name: held[n], build
        )

    async def request(replica: str, call: VideoCall) -> object:
        handoff = world[replica]
        await handoff.before(call)
        return run_video(held[replica], call)

    async def scenario() -> None:
        both = Ring(["a", "b"])
        for handoff in world.values():
            handoff.on_ring(both)
        ids = [f"clip-{i}" for i in range(8)]
        owner = {i: both.owner(session_ring_key(None, i)) for i in ids}
        assert set(owner.values()) == {"a", "b"}
        for session_id in ids:
            call = VideoCall("start_session", session_id, None, frames=FRAMES[:2])
            await request(owner[session_id], call)
        on_b = [i for i in ids if owner[i] == "b"]
        with pytest.raises(SessionMovingError):  # b's session asked of a, on this ring
            await world["a"].before(VideoCall("reset_session", on_b[0], None))

        world["a"].on_ring(Ring(["a"]))  # a hears first; b leaves (Serve stops it)
        waiting = asyncio.gather(*(request("a", VideoCall("reset_session", i, None)) for i in on_b))
        await world["b"].leave()
        dead.add("b")  # Serve stops it once it has left
        assert [orjson.loads(body) for body in await waiting] == [{"is_success": True}] * len(on_b)
        assert all(held["a"].holds((None, i)) for i in ids)
        assert not any(held["b"].holds((None, i)) for i in ids)
        with pytest.raises(SessionMovingError):  # a late router still sends to b
            await world["b"].before(VideoCall("reset_session", on_b[0], None))

        world["c"] = VideoHandoff("c", Peers(world, dead), 5.0, Clock(), lambda: held["c"], build)
        ring = Ring(["a", "c"])
        for name in ("a", "c"):
            world[name].on_ring(ring)
        await world["a"].drain()
        on_c = [i for i in ids if ring.owner(session_ring_key(None, i)) == "c"]
        assert on_c and all(held["c"].holds((None, i)) for i in on_c)
        dead.add("c")
        world["a"].on_ring(Ring(["a"]))
        started = time.monotonic()
        with pytest.raises(SessionNotFoundError):
            await request("a", VideoCall("reset_session", on_c[0], None))
        assert time.monotonic() - started < 2.0
        for session_id in ids:
            for sessions in replicas:
                sessions.close_session((None, session_id))

    asyncio.run(scenario())
