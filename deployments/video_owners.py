"""How the ingress reaches the replica that holds a video session: `RayVideoOwners` over the
segmenter's handle (the same consistent-hash ring as images, keyed by (tenant, session_id)),
or `LocalVideoOwners`, sessions in this process (tests, or the API without Ray)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import anyio
from ray.serve.handle import DeploymentHandle

from deployments.owners import RETRYABLE, ServiceUnavailableError
from deployments.video_operations import VideoCall, VideoReply, run_video, stream_video
from sam3_core.errors import Sam3Error

# `deployments.video_handoff.SessionMovingError.code` (that module imports the engine).
MOVING = "session_moving"


class VideoOwners(Protocol):
    async def call(self, call: VideoCall) -> VideoReply: ...

    async def stream(self, call: VideoCall) -> tuple[str, AsyncIterator[bytes]]:
        """The owner replica's name and the stream's lines; a refusal raises before any."""
        ...


def _raise(outcome: Any) -> Any:
    if isinstance(outcome, Sam3Error):
        raise outcome  # the replica's refusal, sent as a value
    return outcome


def _unavailable(error: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"the segmenter that holds this video session is unavailable ({type(error).__name__}); "
        "retry shortly"
    )


class RayVideoOwners:
    """Sessions on the segmenter's replicas. A request that reaches a replica that no longer
    owns its session (a scale event, the router not yet told) is sent again, every
    `retry_s`, for at most `moving_s` (then a 503): it lands on the new owner, which waits
    for the session to arrive (`deployments.video_handoff`)."""

    def __init__(
        self, handle: DeploymentHandle, moving_s: float = 30.0, retry_s: float = 0.2
    ) -> None:
        self.handle = handle
        self.moving_s = moving_s
        self.retry_s = retry_s

    async def call(self, call: VideoCall) -> VideoReply:
        deadline = time.monotonic() + self.moving_s
        while True:
            try:
                outcome = await self.handle.options(session_id=call.owner_key()).video.remote(call)
            except RETRYABLE as error:
                raise _unavailable(error) from error
            if not _retry(outcome, deadline):
                return _raise(outcome)
            await anyio.sleep(self.retry_s)

    async def stream(self, call: VideoCall) -> tuple[str, AsyncIterator[bytes]]:
        deadline = time.monotonic() + self.moving_s
        while True:
            handle = self.handle.options(session_id=call.owner_key(), stream=True)
            lines = handle.video_stream.remote(call)
            try:
                first = await lines.__anext__()
                if _retry(first, deadline):
                    lines.cancel()
                    await anyio.sleep(self.retry_s)
                    continue
                first = _raise(first)
            except RETRYABLE as error:
                raise _unavailable(error) from error
            except BaseException:
                lines.cancel()
                raise
            break

        async def rest() -> AsyncIterator[bytes]:
            try:
                async for line in lines:
                    yield _raise(line)
            finally:
                # A client that hung up: Serve cancels the replica's generator, which stops
                # the propagation (`deployments.segmenter.SegmenterReplica.video_stream`).
                lines.cancel()

        return first.replica, rest()


def _retry(outcome: Any, deadline: float) -> bool:
    """Whether to send again: the session is moving, and the bound is not reached."""
    return getattr(outcome, "code", None) == MOVING and time.monotonic() < deadline


class LocalVideoOwners:
    """Sessions of this process (`sam3_core.video_sessions.VideoSessions`, or a function
    that builds them on first use), run in worker threads as on a replica."""

    def __init__(self, sessions: Any | Callable[[], Any], replica: str = "local") -> None:
        self._sessions = sessions
        self.replica = replica

    def sessions(self) -> Any:
        if callable(self._sessions):
            self._sessions = self._sessions()
        return self._sessions

    async def call(self, call: VideoCall) -> VideoReply:
        try:
            body = await anyio.to_thread.run_sync(run_video, self.sessions(), call)
        except Sam3Error as error:
            error.replica = self.replica  # type: ignore[attr-defined]
            raise
        return VideoReply(self.replica, body)

    async def stream(self, call: VideoCall) -> tuple[str, AsyncIterator[bytes]]:
        try:
            lines = await anyio.to_thread.run_sync(stream_video, self.sessions(), call)
        except Sam3Error as error:
            error.replica = self.replica  # type: ignore[attr-defined]
            raise
        return self.replica, _in_threads(lines)


async def _in_threads(lines: Any) -> AsyncIterator[bytes]:
    """Each line computed in a worker thread; closing this closes `lines` (after the step
    under way, if any, has ended: a generator cannot be closed while it runs)."""
    try:
        while True:
            line = await anyio.to_thread.run_sync(next, lines, None, abandon_on_cancel=False)
            if line is None:
                return
            yield line
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lines.close)
