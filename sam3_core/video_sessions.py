"""Video sessions: sam3's video tracking (`Sam3VideoPredictor`'s requests) on sessions kept
within limits, frames compressed (`sam3_core.video_frames`).

    sessions = VideoSessions(model, VideoSettings(), RequestLimits(), device)
    info = sessions.start_session(VideoSource(frames=(jpeg0, jpeg1, ...)))
    sessions.add_prompt(info.key, 0, text="person")
    for frame in sessions.propagate_in_video(info.key, "both"):
        frame.masks  # (N, H, W) bool, at the video's size

Each method does what `Sam3VideoPredictor.handle_request` does with the request of the same
name, through the same sam3 model methods, so results are sam3's. What differs is where
things live: frames are decoded when read, sessions are keyed by (tenant, session_id) and
bounded (count, bytes, frames, idle time), and a closed session's memory is released at once.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from sam3_core.errors import (
    InvalidPromptError,
    PropagationError,
    SessionBusyError,
    SessionMovedError,
    SessionNotFoundError,
    VideoCapacityError,
)
from sam3_core.images import check_image_id
from sam3_core.memory import release_freed_memory
from sam3_core.sam3_compat import running_on
from sam3_core.settings import EngineSettings, RequestLimits, VideoSettings
from sam3_core.video_architecture import Sam3VideoModel, load_video_model
from sam3_core.video_frames import FrameStore, VideoSource, encode_source
from sam3_core.video_handoff import SessionState, pack, unpack
from sam3_core.video_prompts import check_prompt
from sam3_core.video_state import (
    FrameOutputs,
    SessionInfo,
    SessionKey,
    VideoStats,
    frame_outputs,
    new_state,
    state_nbytes,
)
from sam3_core.weights import resolve_device

DIRECTIONS = ("both", "forward", "backward")


@dataclass
class _Session:
    key: SessionKey
    frames: FrameStore
    state: dict[str, Any]
    last_used: float
    state_bytes: int = 0
    version: int = 0
    propagating: bool = False
    closed: bool = False
    moved: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.state_bytes


class VideoSessions:
    """The video sessions of one process (a replica) over one sam3 video model."""

    def __init__(
        self,
        model: Sam3VideoModel,
        settings: VideoSettings,
        limits: RequestLimits,
        device: torch.device,
    ) -> None:
        self.model = model
        self.settings = settings
        self.limits = limits
        self.device = device
        model.offload_state = settings.video_offload_state and device.type == "cuda"
        self._sessions: dict[SessionKey, _Session] = {}
        self._registry = threading.Lock()
        # One model call at a time: sessions interleave frame by frame.
        self._model_lock = threading.Lock()
        self.frames_propagated = 0
        # Versions of started sessions: the replica's logical clock when it has one
        # (`deployments.ownership.Clock.tick`), else a count.
        self.stamp: Callable[[], int] = itertools.count(1).__next__

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> VideoSessions:
        """Sessions over the video model the settings ask for (`load_video_model`)."""
        model = load_video_model(settings)
        return cls(model, settings, settings, resolve_device(settings.device))

    # -- the requests of sam3's predictor --------------------------------------------------

    def start_session(
        self, source: VideoSource, session_id: str | None = None, tenant: str | None = None
    ) -> SessionInfo:
        """A new session on `source` (sam3: `start_session`); an existing session of the
        same id is replaced, as in sam3."""
        if session_id is not None:
            check_image_id(session_id, max_length=self.limits.max_image_id_length)
        encoded = encode_source(source, self.settings, self.limits, self.model.image_size)
        key = (tenant, session_id or uuid.uuid4().hex)
        self.close_session(key)
        with self._registry:
            self._expire_idle_locked()
            limit = self.settings.video_max_sessions
            if len(self._sessions) >= limit:
                raise VideoCapacityError(
                    f"this replica holds SAM3_VIDEO_MAX_SESSIONS={limit} video sessions; close "
                    "one or retry later"
                )
            used = self._used_locked()
            if used + encoded.nbytes > self.settings.video_budget:
                used = self._compact_locked(self._sessions.values())
            if used + encoded.nbytes > self.settings.video_budget:
                raise VideoCapacityError(
                    f"the video sessions of this replica would exceed SAM3_VIDEO_SESSION_BYTES="
                    f"{self.settings.video_budget} ({used} in use, this video "
                    f"{encoded.nbytes}); close a session or retry later"
                )
            frames = FrameStore(encoded, self.model.image_size, self.device)
            with self._model_lock, self._running():
                state = new_state(self.model, frames, encoded.height, encoded.width)
            session = _Session(key, frames, state, time.monotonic(), version=self.stamp())
            session.state_bytes = state_nbytes(state)
            self._sessions[key] = session
        return SessionInfo(key, len(frames), encoded.width, encoded.height)

    def add_prompt(
        self,
        key: SessionKey,
        frame_index: int,
        *,
        text: str | None = None,
        points: list[list[float]] | None = None,
        point_labels: list[int] | None = None,
        bounding_boxes: list[list[float]] | None = None,
        bounding_box_labels: list[int] | None = None,
        obj_id: int | None = None,
    ) -> FrameOutputs:
        """Text, boxes (a new concept: sam3 starts the session over) or points (one object,
        `obj_id`) on a frame; coordinates normalised to 0-1, boxes [x, y, w, h] from the
        top-left. Returns the frame's outputs (sam3: `add_prompt`)."""
        with self._session(key) as session:
            check_prompt(
                session.state, self.limits, frame_index, text, points, point_labels,
                bounding_boxes, bounding_box_labels, obj_id,
            )  # fmt: skip
            with self._model_lock, self._running():
                index, outputs = self.model.add_prompt(
                    inference_state=session.state,
                    frame_idx=frame_index,
                    text_str=text,
                    points=points,
                    point_labels=point_labels,
                    boxes_xywh=bounding_boxes,
                    box_labels=bounding_box_labels,
                    obj_id=obj_id,
                )
            session.state_bytes = state_nbytes(session.state)
            self._make_room(session)  # a prompt is not refused: the others are compacted
            return frame_outputs(index, outputs)

    def propagate_in_video(
        self,
        key: SessionKey,
        propagation_direction: str = "both",
        start_frame_index: int | None = None,
        max_frame_num_to_track: int | None = None,
    ) -> Iterator[FrameOutputs]:
        """The prompts tracked through the video, frame by frame as computed (sam3:
        `propagate_in_video`: forward, then backward for "both"). Closing the iterator (a
        client that hangs up) stops it; one propagation per session at a time."""
        if propagation_direction not in DIRECTIONS:
            raise InvalidPromptError(
                f"propagation_direction must be one of {', '.join(DIRECTIONS)}"
            )
        with self._session(key) as session:
            num_frames = session.state["num_frames"]
            if start_frame_index is not None and not 0 <= start_frame_index < num_frames:
                raise InvalidPromptError(
                    f"start_frame_index {start_frame_index} is outside 0..{num_frames - 1}"
                )
            if max_frame_num_to_track is not None and max_frame_num_to_track < 0:
                raise InvalidPromptError("max_frame_num_to_track must be 0 or more")
            prompted = any(out is not None for out in session.state["previous_stages_out"])
            if not prompted and start_frame_index is None:  # sam3 raises a RuntimeError
                raise InvalidPromptError(
                    "no prompt on any frame: add one, or give start_frame_index"
                )
        return self._propagate(session, propagation_direction, start_frame_index,
                               max_frame_num_to_track)  # fmt: skip

    def _propagate(
        self,
        session: _Session,
        direction: str,
        start_frame_index: int | None,
        max_frame_num_to_track: int | None,
    ) -> Iterator[FrameOutputs]:
        # Claimed at the first step, so that an iterator never started claims nothing.
        with self._session(session.key) as claimed:
            claimed.propagating = True
        try:
            for reverse in (False, True):
                if direction == ("backward" if not reverse else "forward"):
                    continue
                with self._running():
                    steps = self.model.propagate_in_video(
                        inference_state=session.state,
                        start_frame_idx=start_frame_index,
                        max_frame_num_to_track=max_frame_num_to_track,
                        reverse=reverse,
                    )
                try:
                    while True:
                        if session.moved:
                            raise SessionMovedError(
                                "propagation stopped: the session moved to another replica (a "
                                "scale event); propagate again to continue there"
                            )
                        if session.closed:
                            raise SessionNotFoundError("the session was closed while propagating")
                        with self._model_lock, self._running():
                            step = _next_step(steps)
                        if step is None:
                            break
                        session.last_used = time.monotonic()
                        self.frames_propagated += 1
                        session.state_bytes = state_nbytes(session.state)
                        yield frame_outputs(*step)
                        self._check_budget(session)
                finally:
                    with self._model_lock, self._running():
                        steps.close()
        finally:
            session.propagating = False

    def remove_object(self, key: SessionKey, obj_id: int) -> bool:
        """Stop tracking an object (sam3: `remove_object`, a user action)."""
        with self._session(key) as session:
            with self._model_lock, self._running():
                self.model.remove_object(session.state, obj_id, is_user_action=True)
            session.state_bytes = state_nbytes(session.state)
        return True

    def reset_session(self, key: SessionKey) -> bool:
        """Back to the session's state right after it started (sam3: `reset_session`)."""
        with self._session(key) as session:
            with self._model_lock, self._running():
                self.model.reset_state(session.state)
            session.state_bytes = state_nbytes(session.state)
        return True

    def close_session(self, key: SessionKey) -> bool:
        """Drop a session and its memory; idempotent (sam3: `close_session`)."""
        with self._registry:
            session = self._sessions.pop(key, None)
        if session is not None:
            self._release(session)
        return True

    # -- moving to another replica (`sam3_core.video_handoff`) -------------------------------

    def holds(self, key: SessionKey) -> bool:
        with self._registry:
            return key in self._sessions

    def keys(self) -> list[SessionKey]:
        with self._registry:
            return list(self._sessions)

    def export_session(self, key: SessionKey, wait_s: float) -> SessionState | None:
        """Take the session out of this process, as it is, for its next owner (None if it is
        not here). A propagation under way may end first (up to `wait_s`), then is stopped
        (its stream ends with `session_moved`); a request under way ends first."""
        with self._registry:
            session = self._sessions.get(key)
        if session is None:
            return None
        deadline = time.monotonic() + wait_s
        while session.propagating and time.monotonic() < deadline:
            time.sleep(0.05)
        session.moved = True  # a propagation still running stops at its next frame
        with session.lock:
            with self._registry:
                if self._sessions.get(key) is not session:
                    return None
                del self._sessions[key]
            session.closed = True
            with self._model_lock:
                _compact(session)  # the next owner computes its caches again
                payload = pack(session.state)
                idle_s = time.monotonic() - session.last_used
                session.state.clear()
        release_freed_memory()
        return SessionState(key, session.version, payload, idle_s)

    def adopt_session(self, moved: SessionState) -> bool:
        """A session another replica sent here (`export_session` there); returns whether it
        is kept: not if a session of its key started here since (a newer version), or it
        does not fit this replica's limits."""
        key = (moved.key[0], moved.key[1])
        with self._registry:
            held = self._sessions.get(key)
            if held is not None and held.version >= moved.version:
                return False
            fits = len(self._sessions) - (held is not None) < self.settings.video_max_sessions
        state = unpack(moved.payload, self.device)
        frames: FrameStore = state["input_batch"].img_batch
        session = _Session(
            key, frames, state, time.monotonic() - moved.idle_s, version=moved.version
        )
        session.state_bytes = state_nbytes(state)
        with self._registry:
            others = [s for k, s in self._sessions.items() if k != key]
            used = sum(s.nbytes for s in others)
            if fits and used + session.nbytes > self.settings.video_budget:
                self._compact_locked(others)
                used = sum(s.nbytes for s in others)
            if not fits or used + session.nbytes > self.settings.video_budget:
                return False
            replaced = self._sessions.get(key)
            if replaced is not None and replaced.version >= moved.version:
                return False
            self._sessions[key] = session
        if replaced is not None:
            self._release(replaced)
        return True

    # -- bookkeeping -----------------------------------------------------------------------

    def expire_idle(self) -> int:
        """Close the sessions idle for `SAM3_VIDEO_IDLE_SECONDS` (returns how many), and
        compact those idle for `SAM3_VIDEO_CACHE_IDLE_SECONDS`."""
        with self._registry:
            closed = self._expire_idle_locked()
            cutoff = time.monotonic() - self.settings.video_cache_idle_seconds
            self._compact_locked(s for s in self._sessions.values() if s.last_used <= cutoff)
            return closed

    def compact(self, key: SessionKey) -> int:
        """Drop a session's per-frame caches now (`_compact`); returns its bytes after."""
        with self._registry:
            session = self._sessions.get(key)
            if session is None:
                raise _not_found(key)
            self._compact_locked([session])
            return session.nbytes

    def stats(self) -> VideoStats:
        with self._registry:
            sessions = list(self._sessions.values())
        return VideoStats(
            sessions=len(sessions),
            frame_bytes=sum(session.frames.nbytes for session in sessions),
            state_bytes=sum(session.state_bytes for session in sessions),
            frames_propagated=self.frames_propagated,
            budget_bytes=self.settings.video_budget,
        )

    def session_bytes(self, key: SessionKey) -> int:
        with self._registry:
            session = self._sessions.get(key)
        if session is None:
            raise _not_found(key)
        return session.nbytes

    def _used_locked(self) -> int:
        return sum(session.nbytes for session in self._sessions.values())

    def _compact_locked(self, sessions: Iterable[_Session]) -> int:
        """`_compact` the sessions given that no request is using; returns the bytes all
        sessions hold after."""
        for session in list(sessions):
            if not session.lock.acquire(blocking=False):
                continue  # a request is using it
            try:
                if not (session.propagating or session.closed):
                    _compact(session)
            finally:
                session.lock.release()
        return self._used_locked()

    def _expire_idle_locked(self) -> int:
        cutoff = time.monotonic() - self.settings.video_idle_seconds
        idle = [
            key
            for key, session in self._sessions.items()
            if session.last_used < cutoff and not session.propagating
        ]
        for key in idle:
            self._release(self._sessions.pop(key))
        return len(idle)

    def _release(self, session: _Session) -> None:
        """Free a session's memory now; a propagation of it stops at its next frame."""
        session.closed = True
        with self._model_lock:
            session.state.clear()
        if session.frames.device.type == "cuda":
            torch.cuda.empty_cache()
        release_freed_memory()

    @contextlib.contextmanager
    def _session(self, key: SessionKey) -> Iterator[_Session]:
        """The live session of `key`, locked against concurrent changes; 409 while it
        propagates."""
        self.expire_idle()
        with self._registry:
            session = self._sessions.get(key)
        if session is None:
            raise _not_found(key)
        with session.lock:
            if session.closed:
                raise _not_found(key)
            if session.propagating:
                raise SessionBusyError(
                    f"session {key[1]!r} is propagating; wait for its stream to end"
                )
            session.last_used = time.monotonic()
            yield session

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """sam3's video model as its predictor runs it: inference mode, bf16 autocast (sam3
        enters it for the whole process on a GPU; here for the call only, on any device, as
        its detector casts features to bf16 and needs autocast to mix them), on our device."""
        with (
            running_on(self.device),
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16),
        ):
            yield

    def _make_room(self, session: _Session) -> int:
        """The bytes all sessions hold, the others than `session` compacted if that is over
        the budget."""
        with self._registry:
            used = self._used_locked()
            if used > self.settings.video_budget:
                used = self._compact_locked(s for s in self._sessions.values() if s is not session)
            return used

    def _check_budget(self, session: _Session) -> None:
        used = self._make_room(session)
        if used > self.settings.video_budget:
            raise VideoCapacityError(
                f"propagation stopped: the video sessions of this replica hold {used} bytes, "
                f"over SAM3_VIDEO_SESSION_BYTES={self.settings.video_budget}; close a "
                "session or propagate fewer frames (max_frame_num_to_track)"
            )


def _compact(session: _Session) -> None:
    """Drop a session's per-frame caches in sam3's `feature_cache`, where that cannot change
    a later answer. The last frame's image and tracker features (under its index) always:
    sam3 derives them again from its detector's outputs before any step reads them
    (`_prepare_backbone_feats`). The detector's outputs (`multigpu_buffer`, the largest)
    only while no frame has box prompts: sam3 computes a frame's detections ahead, with
    the frame before's box prompts, so that detections computed again, with the frame's
    own, could differ from what an uncompacted session (and sam3's predictor) answers.
    Text features and tracking bounds stay. The dict is changed in place: sam3's tracker
    states hold it as their `cached_features`."""
    cache = session.state.get("feature_cache", {})
    cached = [k for k in cache if isinstance(k, int) or k == "multigpu_buffer"]
    if "multigpu_buffer" in cached and any(
        p is not None for p in session.state.get("per_frame_geometric_prompt", ())
    ):
        cached.remove("multigpu_buffer")
    for name in cached:
        del cache[name]
    if cached:
        session.state_bytes = state_nbytes(session.state)


def _not_found(key: SessionKey) -> SessionNotFoundError:
    return SessionNotFoundError(
        f"no video session {key[1]!r} here: it was never started, was closed, expired after "
        "SAM3_VIDEO_IDLE_SECONDS idle, or was lost with its replica; start it again"
    )


def _next_step(steps: Iterator) -> tuple | None:
    """sam3's next frame, its refusals (its own asserts and RuntimeErrors on a session's state)
    said as one: a session whose first pass stopped short and was then clicked has "no cached
    outputs" for the frames that pass never reached."""
    try:
        return next(steps, None)
    except (AssertionError, RuntimeError) as error:
        hint = (
            " (the session's first pass did not reach every frame: reset_session, then "
            "propagate over the whole video before adding prompts)"
            if "No cached outputs" in str(error)
            else ""
        )
        raise PropagationError(f"sam3 could not propagate: {error}{hint}") from error
