"""The video routes (`/sam3/video/*`), one per `VIDEO_OPERATIONS` entry: parse the body, read
a video's bytes (base64 or URL, in a worker thread), and hand the call to the session's owner.
Errors are `Sam3Error`s, mapped to statuses by the API's one table (`deployments.api`)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import anyio
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from deployments.middleware import tenant_of
from deployments.operations import JSON, REPLICA_HEADER
from deployments.request_body import JsonRoute
from deployments.settings import IngressSettings
from deployments.video_operations import (
    NDJSON,
    VIDEO_OPERATIONS,
    VideoCall,
    VideoOperation,
    video_call,
)
from deployments.video_owners import VideoOwners
from sam3_core.errors import (
    InvalidImageError,
    InvalidImageIdError,
    Sam3Error,
    VideoTooLargeError,
)
from sam3_core.images import check_image_id
from sam3_core.protocol.image_input import read_image_input
from sam3_core.protocol.video_bodies import StartSessionRequest
from sam3_core.settings import VideoSettings

_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD


def add_video_routes(
    app: FastAPI,
    owners: VideoOwners,
    settings: IngressSettings,
    video: VideoSettings,
    responses: dict[int, dict[str, object]],
) -> None:
    url_policy = settings.url_policy()

    async def with_video(body: StartSessionRequest, call: VideoCall) -> VideoCall:
        """The call with the video's bytes, read within SAM3_VIDEO_MAX_VIDEO_BYTES."""
        if (body.video is None) == (body.frames is None):
            raise InvalidImageError("send video (an MP4/WebM) or frames (pictures), not both")
        if body.frames is not None and len(body.frames) > video.video_max_frames:
            raise VideoTooLargeError(
                f"{len(body.frames)} frames, over SAM3_VIDEO_MAX_FRAMES={video.video_max_frames}"
            )
        budget = video.video_max_video_bytes

        def read() -> VideoCall:
            if body.video is not None:
                data = read_image_input(body.video, max_bytes=budget, url_policy=url_policy)
                return replace(call, video=data)
            frames, total = [], 0
            for frame in body.frames or ():
                frames.append(read_image_input(frame, max_bytes=budget, url_policy=url_policy))
                total += len(frames[-1])
                if total > budget:
                    raise VideoTooLargeError(
                        f"the frames have over SAM3_VIDEO_MAX_VIDEO_BYTES={budget} bytes"
                    )
            return replace(call, frames=tuple(frames))

        return await anyio.to_thread.run_sync(read)

    def route(operation: VideoOperation) -> Callable[..., Awaitable[Response]]:
        async def endpoint(body: object, http: Request) -> Response:
            session_id = getattr(body, "session_id", None)
            if session_id is not None:
                try:  # session ids follow the image ids' rules
                    check_image_id(session_id, max_length=settings.max_image_id_length)
                except InvalidImageIdError as error:
                    message = error.message.replace("image_id", "session_id")
                    raise InvalidImageIdError(message) from None
            call = video_call(operation, body, tenant_of(http.scope))
            if isinstance(body, StartSessionRequest):
                call = await with_video(body, call)
            if operation.streamed:
                replica, lines = await owners.stream(call)
                return StreamingResponse(
                    _until_error(lines), media_type=NDJSON, headers={REPLICA_HEADER: replica}
                )
            reply = await owners.call(call)
            return Response(reply.body, media_type=JSON, headers={REPLICA_HEADER: reply.replica})

        endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("body", _POSITIONAL, annotation=operation.body),
                inspect.Parameter("http", _POSITIONAL, annotation=Request),
            ]
        )
        endpoint.__name__ = f"video_{operation.name}"
        return endpoint

    for operation in VIDEO_OPERATIONS:
        app.router.add_api_route(
            operation.path,
            route(operation),
            methods=["POST"],
            response_model=None if operation.streamed else operation.response,
            responses=responses,
            summary=operation.summary,
            route_class_override=JsonRoute,
        )


async def _until_error(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream's lines; a refusal after the first line (the session closed meanwhile, the
    byte budget reached) ends it with a last line `{"error": {"code", "message"}}`."""
    try:
        async for line in lines:
            yield line
    except Sam3Error as error:
        yield orjson.dumps({"error": {"code": error.code, "message": error.message}}) + b"\n"
