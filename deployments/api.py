"""The HTTP API (SPEC §3), Roboflow-compatible, as a FastAPI app around a `SegmenterClient`.

The API decodes base64 (or fetches a URL), works out the `image_id`, validates prompts, and
hands bytes and prompts to the segmenter that owns the image; it never decodes pixels. Every
error becomes `{"message", "code"}` with its status here, in one table.
"""

from __future__ import annotations

import json
import logging
import math
import time

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from deployments.messages import SegmenterClient, ServiceUnavailableError
from deployments.middleware import ApiKeyAuth, RequestBodyLimit, error_response
from deployments.settings import ServiceSettings
from sam3_core.errors import (
    ImageNotCachedError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidImageIdError,
    InvalidPromptError,
    Sam3Error,
    WeightsError,
)
from sam3_core.images import check_image_id, content_id, read_image_input
from sam3_core.prompts import validate_prompt_set
from sam3_core.schemas import (
    EmbedImageRequest,
    EmbedImageResponse,
    ErrorResponse,
    ImageInput,
    SegmentRequest,
    VisualSegmentRequest,
    VisualSegmentResponse,
)

logger = logging.getLogger(__name__)

STATUS = {
    InvalidImageError: 400,  # UrlInputError too
    InvalidImageIdError: 400,
    InvalidPromptError: 400,
    ImageNotCachedError: 404,
    ImageTooLargeError: 413,
    ServiceUnavailableError: 503,
    WeightsError: 503,
}
OPEN_PATHS = ("/healthz",)
REPLICA_HEADER = "x-sam3-replica"
CACHE_HEADER = "x-sam3-embedding-cache"
LOGITS_HEADER = "x-sam3-logits-cache"

_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 503)}


def cache_headers(replica: str, cache_hit: bool) -> dict[str, str]:
    return {REPLICA_HEADER: replica, CACHE_HEADER: "hit" if cache_hit else "miss"}


def status_of(error: Sam3Error) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def create_api(client: SegmenterClient, settings: ServiceSettings) -> FastAPI:
    """The ASGI app: routes, error mapping, body limit and API keys."""
    app = FastAPI(
        title="sam3-serve",
        summary="Interactive SAM3 segmentation: embed an image once, then click.",
        version="0.1.0",
    )

    async def image_bytes(
        image: ImageInput | None, image_id: str | None
    ) -> tuple[bytes | None, str, str | None]:
        """(bytes, image_id, digest): base64 decoding, URL fetching and hashing run in a
        worker thread, off the event loop."""
        if image_id is not None:
            check_image_id(image_id, max_length=settings.max_image_id_length)
        if image is None:
            if image_id is None:
                raise InvalidImageError("send the image, or the image_id of an embedded image")
            return None, image_id, None

        def read() -> tuple[bytes, str]:
            data = read_image_input(image, settings)
            return data, content_id(data)

        data, digest = await anyio.to_thread.run_sync(read)
        return data, image_id or digest, digest

    @app.post(
        "/sam3/embed_image",
        response_model=EmbedImageResponse,
        responses=_ERRORS,
        summary="Embed an image and keep its embedding for later clicks.",
    )
    async def embed_image(body: EmbedImageRequest, response: Response) -> EmbedImageResponse:
        started = time.perf_counter()
        data, image_id, digest = await image_bytes(body.image, body.image_id)
        reply = await client.embed(data, image_id, digest)
        response.headers.update(cache_headers(reply.replica, reply.cache_hit))
        return EmbedImageResponse(image_id=reply.image_id, time=time.perf_counter() - started)

    @app.post(
        "/sam3/visual_segment",
        response_model=VisualSegmentResponse,
        responses=_ERRORS,
        summary="Masks for points and boxes: one prediction per prompt, in order.",
    )
    async def visual_segment(body: VisualSegmentRequest) -> Response:
        started = time.perf_counter()
        validate_prompt_set(
            body.prompts,
            max_prompts=settings.max_prompts,
            max_points=settings.max_points_per_prompt,
        )
        data, image_id, digest = await image_bytes(body.image, body.image_id)
        reply = await client.segment(
            SegmentRequest(
                prompts=body.prompts,
                image=data,
                image_id=image_id,
                image_digest=digest,
                multimask_output=body.multimask_output,
                mask_format="rle" if body.format == "rle" else "polygon",
                save_logits_to_cache=body.save_logits_to_cache,
                load_logits_from_cache=body.load_logits_from_cache,
            )
        )
        seconds = json.dumps(time.perf_counter() - started).encode()
        headers = cache_headers(reply.replica, reply.cache_hit)
        if reply.logits_cache_hit is not None:
            headers[LOGITS_HEADER] = "hit" if reply.logits_cache_hit else "miss"
        # Assembled from the replica's pre-encoded predictions (see SegmentReply).
        return Response(
            content=b'{"predictions":' + reply.predictions_json + b',"time":' + seconds + b"}",
            media_type="application/json",
            headers=headers,
        )

    @app.get("/healthz", summary="Liveness of the ingress.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(Sam3Error)
    async def engine_error(_: Request, error: Sam3Error) -> JSONResponse:
        status = status_of(error)
        headers = {}
        if isinstance(error, ServiceUnavailableError):
            retry = error.retry_after_s
            seconds = settings.retry_after_seconds if retry is None else math.ceil(retry)
            headers["Retry-After"] = str(seconds)
        if status >= 500:
            logger.warning("%s: %s", error.code, error.message)
        return error_response(status, error.code, error.message, **headers)

    @app.exception_handler(RequestValidationError)
    async def schema_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in e['loc'][1:]) or 'body'}: {e['msg']}"
            for e in error.errors()[:10]
        ]
        return error_response(422, "invalid_request", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, "http_error", str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return error_response(500, "internal_error", "internal error; see the service's logs")

    keys = [key.get_secret_value() for key in settings.api_keys]
    app.add_middleware(ApiKeyAuth, keys=keys, open_paths=OPEN_PATHS)
    app.add_middleware(RequestBodyLimit, max_bytes=settings.max_request_bytes)
    return app
