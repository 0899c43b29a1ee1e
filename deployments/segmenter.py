"""The segmenter deployment: one `sam3_core.Segmenter` engine per replica, each replica the
owner of the images routed to it by consistent hashing on `image_id`.

Its methods are derived from `deployments.operations.OPERATIONS`, one per operation. The
engine's calls block (model and image decoding), so they run on a small thread pool, never
on the replica's event loop. A request the engine refuses (`Sam3Error`: an unknown
`image_id`, a broken image, ...) is answered with the error as a value, which the ingress
raises again (`owners.RayOwners`): Ray Serve logs every exception a replica method raises at
ERROR with its traceback and counts it as a failed request, which a client's mistake is not.

Each replica knows which images it owns (`deployments.ring`) and moves images between owners
when the replica set changes or a helper needs one (`deployments.handoff`, through
`deployments.peers`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from ray import serve

from deployments.handoff import Handoff
from deployments.memory_share import with_memory_share
from deployments.metrics import SegmenterMetrics, VideoMetrics
from deployments.operations import OPERATIONS, Operation, Reply, run
from deployments.peers import RayPeers
from deployments.ring import RINGS, Ring, deployment_name
from deployments.settings import SegmenterSettings
from deployments.video_handoff import CALLS as VIDEO_CALLS
from deployments.video_handoff import SessionMovingError, VideoHandoff
from deployments.video_operations import VideoCall, VideoReply, run_video, stream_video
from sam3_core.calls import DecoderFile, ImageRequest, ServedModel
from sam3_core.engine import Segmenter
from sam3_core.errors import (
    ImageBytesNeededError,
    ImageNotCachedError,
    Sam3Error,
    SessionNotFoundError,
)
from sam3_core.settings import EngineSettings
from sam3_core.video_sessions import VideoSessions

logger = logging.getLogger("ray.serve")


class SegmenterReplica:
    """A replica of the "Segmenter" deployment: embeds and decodes for the images it owns.
    Options (replicas, GPUs, router) are set by the application builder (`deployments.app`)
    and `serve_config.yaml`."""

    def __init__(self, engine_settings: dict[str, Any], threads: int) -> None:
        self.settings = with_memory_share(EngineSettings(**engine_settings))
        self.engine = Segmenter.from_settings(self.settings)
        self._video: VideoSessions | None = None  # built on the first video request
        self._video_build = asyncio.Lock()
        self.video_metrics = VideoMetrics()
        replica_id = serve.get_replica_context().replica_id
        self.replica = replica_id.unique_id
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sam3")
        self.metrics = SegmenterMetrics()
        self.metrics.record_stats(self.engine.stats())
        if self.engine.memory is not None:
            self.metrics.record_memory(self.engine.memory)
        timeout_s = SegmenterSettings(**engine_settings).handoff_timeout_seconds
        peers = RayPeers(replica_id, answer=self._answer)
        self.handoff = Handoff(self.engine, self.replica, peers, timeout_s, self.metrics)
        self.video_handoff = VideoHandoff(
            self.replica,
            peers,
            timeout_s,
            self.handoff.ownership.clock,
            lambda: self._video,
            self._video_sessions,
            self.video_metrics,
        )
        # Serve builds the replica on its event loop: ring changes (heard in the router's
        # thread) are handed to that loop.
        loop = asyncio.get_running_loop()
        self._ring_feed = deployment_name(
            replica_id.deployment_id.app_name, replica_id.deployment_id.name
        )
        self._on_ring = lambda ring: loop.call_soon_threadsafe(self._ring_changed, ring)
        RINGS.subscribe(self._ring_feed, self._on_ring)
        self._left = False
        logger.info(
            "segmenter %s: %s model on %s, %d worker threads",
            self.replica,
            self.engine.model.arch.name,
            self.engine.model.device,
            threads,
        )

    def _answer(self, method: str, args: tuple) -> Awaitable[Any]:
        """Another replica's hand-off call: a video session's, or an image's."""
        handoff = self.video_handoff if method in VIDEO_CALLS else self.handoff
        return handoff.answer(method, args)

    def _ring_changed(self, ring: Ring) -> None:
        self.handoff.on_ring(ring)
        self.video_handoff.on_ring(ring)

    async def _serve(
        self, operation: Operation, request: ImageRequest, forwarded: bool = False
    ) -> Reply | Sam3Error:
        reply = await self._serve_once(operation, request, forwarded)
        if isinstance(reply, ImageNotCachedError) and self.handoff.lost_borrowed_copy(request):
            # The copy borrowed for it left this replica's cache before the engine read it
            # (other images pushed it out): fetched again, or sent on to the owner, once.
            reply = await self._serve_once(operation, request, forwarded)
        return reply

    async def _serve_once(
        self, operation: Operation, request: ImageRequest, forwarded: bool
    ) -> Reply | Sam3Error:
        arrived = time.perf_counter()
        async with self.handoff.serving(request, forwarded) as owner:
            if owner is not None:  # not ours, and the owner's picture could not be fetched
                return await self.handoff.forward(owner, operation.name, request)
            work = asyncio.get_running_loop().run_in_executor(
                self._pool, run, self.engine, operation, request, self.replica, arrived
            )
            try:
                reply = await asyncio.shield(work)
            except asyncio.CancelledError:
                # The client hung up, but the engine's thread runs on and may store new
                # content: the request counts as running here (its image is not sent
                # away) until that is done.
                await asyncio.wait([work])
                raise
            except Sam3Error as error:
                # A digest-first request without its bytes is routine; the rest are clients'.
                level = logging.DEBUG if isinstance(error, ImageBytesNeededError) else logging.INFO
                logger.log(level, "%s refused (%s): %s", operation.name, error.code, error.message)
                return error
            finally:
                self.metrics.record_stats(self.engine.stats())
            self.metrics.record_timings(operation.name, reply.timings)
            await self.handoff.after(request, reply.embedding_cache)
            return reply

    async def handoff_forwarded(
        self, operation: str, request: ImageRequest, clock: int = 0
    ) -> Reply | Sam3Error:
        """A request another replica sent on to this one, its image's owner (a helper that
        could not get the image's picture, `deployments.handoff`); `clock`: the sender's
        logical clock, so that what this request stores is newer than what the sender had."""
        self.handoff.ownership.clock.observe(clock)
        return await self._serve(_BY_NAME[operation], request, forwarded=True)

    async def decoder_onnx(self, known_etag: str | None) -> DecoderFile:
        """This replica's decoder as ONNX (exported on first call), unless the ingress holds
        `known_etag` already."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self.engine.decoder_onnx, known_etag
        )

    async def served_model(self) -> ServedModel:
        return self.engine.served_model()

    async def _video_sessions(self) -> VideoSessions:
        async with self._video_build:
            if self._video is None:
                sessions = await asyncio.get_running_loop().run_in_executor(
                    self._pool, VideoSessions.from_settings, self.engine.video_settings()
                )
                sessions.stamp = self.handoff.ownership.clock.tick  # versions: one clock
                self._video = sessions
        return self._video

    async def video(self, call: VideoCall) -> VideoReply | Sam3Error:
        """A video request (`deployments.video_operations`) of a session this replica owns
        (or, for start_session, will). Sessions move with the ring (`deployments.video_handoff`):
        a session on its way here is waited for; one that left is refused as moving."""
        try:
            await self.video_handoff.before(call)
        except SessionMovingError as error:
            error.replica = self.replica  # type: ignore[attr-defined]
            return error
        sessions = await self._video_sessions()
        try:
            body = await asyncio.get_running_loop().run_in_executor(
                self._pool, run_video, sessions, call
            )
        except Sam3Error as error:
            if isinstance(error, SessionNotFoundError):
                error = self.video_handoff.moved_away(call) or error
            logger.info("video %s refused (%s): %s", call.operation, error.code, error.message)
            error.replica = self.replica  # type: ignore[attr-defined]
            return error
        finally:
            self.video_metrics.record_stats(sessions.stats())
        self.video_handoff.after(call)
        return VideoReply(self.replica, body)

    async def video_stream(self, call: VideoCall) -> AsyncIterator[VideoReply | Sam3Error | bytes]:
        """propagate_in_video: first a `VideoReply` (or the refusal), then one line per frame,
        each computed in a worker thread. Cancelled (the client hung up), it stops after the
        frame under way."""
        try:
            await self.video_handoff.before(call)
        except SessionMovingError as error:
            error.replica = self.replica  # type: ignore[attr-defined]
            yield error
            return
        sessions = await self._video_sessions()
        loop = asyncio.get_running_loop()
        try:
            lines = await loop.run_in_executor(self._pool, stream_video, sessions, call)
        except Sam3Error as error:
            if isinstance(error, SessionNotFoundError):
                error = self.video_handoff.moved_away(call) or error
            error.replica = self.replica  # type: ignore[attr-defined]
            yield error
            return
        yield VideoReply(self.replica)
        step: asyncio.Future | None = None
        try:
            while True:
                started = time.perf_counter()
                step = loop.run_in_executor(self._pool, next, lines, None)
                try:
                    line = await step
                except Sam3Error as error:
                    yield error
                    return
                step = None
                if line is None:
                    return
                self.video_metrics.frame_latency.observe(time.perf_counter() - started)
                self.video_metrics.record_stats(sessions.stats())
                yield line
        finally:
            if step is not None:  # a generator cannot be closed while a thread runs it
                await asyncio.shield(asyncio.wait([step]))
            await loop.run_in_executor(self._pool, lines.close)
            self.video_metrics.record_stats(sessions.stats())

    def __del__(self) -> Awaitable[None] | None:
        """Serve calls this when it stops the replica, and awaits what it returns (within
        `graceful_shutdown_timeout_s`): the images go to their next owners first. Not a
        coroutine function, so that the garbage collector's later call makes none. Video
        sessions go to their next owners too."""
        if getattr(self, "_left", True):  # called already, or __init__ never finished
            return None
        self._left = True
        RINGS.unsubscribe(self._ring_feed, self._on_ring)
        return self._leave()

    async def _leave(self) -> None:
        video = getattr(self, "video_handoff", None)  # absent where tests build images only
        await asyncio.gather(self.handoff.leave(), *([video.leave()] if video else []))

    def check_health(self) -> None:
        """Ray Serve restarts the replica if this raises."""
        if self.engine.model.device.type == "cuda":
            torch.cuda.synchronize(self.engine.model.device)  # raises on a faulted GPU


def _method(
    operation: Operation,
) -> Callable[[SegmenterReplica, ImageRequest], Awaitable[Reply | Sam3Error]]:
    async def method(self: SegmenterReplica, request: ImageRequest) -> Reply | Sam3Error:
        return await self._serve(operation, request)

    method.__name__ = operation.name
    method.__qualname__ = f"SegmenterReplica.{operation.name}"
    method.__doc__ = operation.summary
    return method


_BY_NAME = {operation.name: operation for operation in OPERATIONS}
for _operation in OPERATIONS:
    setattr(SegmenterReplica, _operation.name, _method(_operation))
