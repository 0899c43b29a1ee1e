"""The HTTP API, Roboflow-compatible: a FastAPI app whose routes are derived from
`deployments.operations.OPERATIONS`, in front of the replicas that own the images (`Owners`).

A route checks the body, decodes base64 (or fetches a URL), works out the `image_id`, and
hands bytes and prompts to the owner; it never decodes pixels. Every error becomes
`{"message", "code"}` with its status here, in one table.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from deployments.label_studio import add_label_studio
from deployments.middleware import (
    ApiKeyAuth,
    RequestBodyLimit,
    RequestClock,
    arrived_at,
    error_response,
    tenant_of,
)
from deployments.operations import (
    JSON,
    OPERATIONS,
    REPLICA_HEADER,
    STAGES,
    ImageBody,
    Operation,
    Reply,
)
from deployments.owners import Owners, ServiceUnavailableError
from deployments.page import (
    DOCS_ASSETS_PREFIX,
    OPEN_PATHS,
    OPEN_PREFIXES,
    SecurityHeaders,
    add_page,
)
from deployments.request_body import JsonRoute, describe_problems, kept_body
from deployments.settings import IngressSettings
from deployments.video_api import add_video_routes
from deployments.video_owners import VideoOwners
from sam3_core.calls import DecoderFile, ImageRequest
from sam3_core.errors import (
    ConceptsDisabledError,
    ImageNotCachedError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidImageIdError,
    InvalidPromptError,
    MaskBudgetError,
    PropagationError,
    Sam3Error,
    SessionBusyError,
    SessionMovedError,
    SessionNotFoundError,
    VideoCapacityError,
    WeightsError,
)
from sam3_core.images import check_image_id, content_id
from sam3_core.protocol.bodies import ErrorResponse, ModelResponse, ReadyResponse
from sam3_core.protocol.image_input import read_image_input
from sam3_core.settings import VideoSettings

logger = logging.getLogger(__name__)

STATUS = {
    ConceptsDisabledError: 400,
    InvalidImageError: 400,  # UrlInputError too
    InvalidImageIdError: 400,
    InvalidPromptError: 400,
    ImageNotCachedError: 404,
    ImageTooLargeError: 413,
    MaskBudgetError: 413,
    SessionNotFoundError: 404,
    SessionMovedError: 503,
    SessionBusyError: 409,
    PropagationError: 409,
    VideoCapacityError: 429,
    ServiceUnavailableError: 503,
    WeightsError: 503,
}

DECODER_PATH = "/sam3/decoder.onnx"
ONNX_MEDIA_TYPE = "application/octet-stream"
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 422, 503)}
_VIDEO_ERRORS = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 409, 413, 422, 429, 503)
}
_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD


def status_of(error: Sam3Error) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def reply_response(reply: Reply, timings: dict[str, float], arrived: float) -> Response:
    """The replica's pre-encoded body (a JSON object gets the service's `time` last) and
    the request's stages in `Server-Timing`; adds "total" to `timings`."""
    body = reply.body
    timings["total"] = time.perf_counter() - arrived
    if reply.media_type == JSON:
        body = body[:-1] + b',"time":' + json.dumps(timings["total"]).encode() + b"}"
    headers = reply.response_headers()
    headers["Server-Timing"] = ", ".join(
        f"{stage};dur={timings[stage] * 1000:.3f}" for stage in STAGES if stage in timings
    )
    return Response(content=body, media_type=reply.media_type, headers=headers)


def create_api(
    owners: Owners,
    settings: IngressSettings,
    observe: Callable[[str, dict[str, float]], None] | None = None,
    readiness: Callable[[], Awaitable[str | None]] | None = None,
    video_owners: VideoOwners | None = None,
) -> FastAPI:
    """The ASGI app: a route per operation, error mapping, body limit and API keys, the
    annotation page at `/` and the docs at `/docs` (their assets served from the package).
    `observe(operation, timings)` gets each answered request's stages (metrics);
    `readiness()` says why the owners cannot serve yet, None when they can (without it:
    always ready, as an engine in this process is). With `video_owners`, the video routes
    (`deployments.video_api`) too."""
    app = FastAPIOffline(
        title="sam3-serve",
        summary="Interactive SAM3 segmentation: embed an image once, then click.",
        version="0.1.0",
        static_url=DOCS_ASSETS_PREFIX,
    )
    url_policy = settings.url_policy()

    async def read_image(body: ImageBody, tenant: str | None) -> ImageRequest:
        """The body's image bytes, id and digest: base64 decoding, URL fetching and hashing
        run in a worker thread, off the event loop."""
        image, image_id = body.image, body.image_id
        if image_id is not None:
            check_image_id(image_id, max_length=settings.max_image_id_length)
        if image is None:
            if image_id is None:
                raise InvalidImageError("send the image, or the image_id of an embedded image")
            return ImageRequest(image_id=image_id, tenant=tenant)

        def read() -> tuple[bytes, str]:
            data = read_image_input(
                image, max_bytes=settings.max_image_bytes, url_policy=url_policy
            )
            return data, content_id(data)

        data, digest = await anyio.to_thread.run_sync(read)
        return ImageRequest(
            image=data, image_id=image_id or digest, image_digest=digest, tenant=tenant
        )

    def route(operation: Operation) -> Callable[..., Awaitable[Response]]:
        async def endpoint(body: ImageBody, http: Request) -> Response:
            arrived = arrived_at(http.scope)
            operation.check(body, settings)
            request = operation.request(body, await read_image(body, tenant_of(http.scope)))
            parsed = time.perf_counter()
            reply = await owners.call(operation, request)
            own = {"parse": parsed - arrived, "owner": time.perf_counter() - parsed}
            timings = {**reply.timings, **own}
            response = reply_response(reply, timings, arrived)
            if observe is not None:  # the replica observes its own stages
                observe(operation.name, {**own, "total": timings["total"]})
            return response

        # FastAPI reads the body's model, hence its validation and OpenAPI schema, from here.
        endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("body", _POSITIONAL, annotation=operation.body),
                inspect.Parameter("http", _POSITIONAL, annotation=Request),
            ]
        )
        endpoint.__name__ = operation.name
        return endpoint

    for operation in OPERATIONS:
        binary = {200: {"content": {operation.media_type: {}}}}
        app.router.add_api_route(
            operation.path,
            route(operation),
            methods=["POST"],
            response_model=operation.response,
            responses={**_ERRORS, **({} if operation.response else binary)},
            summary=operation.summary,
            route_class_override=JsonRoute,
        )

    decoder_file: list[DecoderFile] = []  # the last one a replica sent

    @app.get(
        DECODER_PATH,
        summary="The served weights' interactive decoder as ONNX, for /sam3/embedding's "
        "arrays (ETag: the weights' digest).",
        responses={200: {"content": {ONNX_MEDIA_TYPE: {}}}, 304: {"description": "unchanged"}},
        response_class=Response,
    )
    async def decoder_onnx(http: Request) -> Response:
        known = decoder_file[0].etag if decoder_file else None
        answer = await owners.decoder(known)
        if answer.onnx is not None:
            decoder_file[:] = [answer]
        current = decoder_file[0]
        headers = {"ETag": f'"{current.etag}"', "Cache-Control": "private, no-cache"}
        if http.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return Response(current.onnx, media_type=ONNX_MEDIA_TYPE, headers=headers)

    @app.get(
        "/sam3/model",
        summary="What the service serves: SAM3's weights, a demo model (not SAM3) or random "
        "weights, and whether its concept detector is trained.",
        response_model=ModelResponse,
        responses={503: {"model": ErrorResponse}},
    )
    async def model() -> ModelResponse:
        return ModelResponse(**dataclasses.asdict(await owners.served_model()))

    if video_owners is not None:
        add_video_routes(app, video_owners, settings, VideoSettings(), _VIDEO_ERRORS)

    @app.get("/healthz", summary="Liveness of the ingress (before the segmenters are up).")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: 200 once the segmenters are up and routed to, 503 and why before.",
        response_model=ReadyResponse,
        responses={503: {"model": ErrorResponse}},
    )
    async def readyz() -> ReadyResponse | JSONResponse:
        reason = None if readiness is None else await readiness()
        if reason is None:
            return ReadyResponse(status="ready")
        retry = str(settings.retry_after_seconds)
        return error_response(503, "not_ready", reason, **{"Retry-After": retry})

    add_page(app)
    add_label_studio(app, owners, settings)

    @app.exception_handler(Sam3Error)
    async def engine_error(_: Request, error: Sam3Error) -> JSONResponse:
        status = status_of(error)
        headers = {}
        replica = getattr(error, "replica", None)  # the replica that refused (video requests)
        if replica is not None:
            headers[REPLICA_HEADER] = replica
        if isinstance(error, ServiceUnavailableError):
            retry = error.retry_after_s
            seconds = settings.retry_after_seconds if retry is None else math.ceil(retry)
            headers["Retry-After"] = str(seconds)
        if status >= 500:
            logger.warning("%s: %s", error.code, error.message)
        return error_response(status, error.code, error.message, **headers)

    @app.exception_handler(RequestValidationError)
    async def schema_error(http: Request, error: RequestValidationError) -> JSONResponse:
        message = describe_problems(error.errors(), kept_body(http.scope))
        return error_response(422, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, "http_error", str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return error_response(500, "internal_error", "internal error; see the service's logs")

    # The last added runs first: the clock, the API key (before any body byte is read,
    # unless the key is in the body), then the body limit.
    keys = [key.get_secret_value() for key in settings.api_keys]
    app.add_middleware(RequestBodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        ApiKeyAuth,
        keys=keys,
        open_paths=OPEN_PATHS,
        open_prefixes=OPEN_PREFIXES,
        max_body_key_bytes=settings.max_body_key_bytes,
    )
    app.add_middleware(RequestClock)
    app.add_middleware(SecurityHeaders)  # outermost: on refusals too
    return app
