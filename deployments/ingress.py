"""The ingress deployment (CPU): serves the HTTP API and sends each request to the segmenter
replica that owns its image, `handle.options(session_id=image_id)`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.api import create_api
from deployments.messages import EmbedReply, SegmentReply, ServiceUnavailableError
from deployments.settings import ServiceSettings
from sam3_core.schemas import SegmentRequest

# Failures after which the same request, sent again, can succeed: the owner replica was
# overloaded, or died and is being replaced (its images then move to a new owner).
RETRYABLE = (
    BackPressureError,
    DeploymentUnavailableError,
    RayActorError,
    ActorDiedError,
    ActorUnavailableError,
)


class HandleSegmenterClient:
    """`SegmenterClient` over a Ray Serve handle with consistent-hash affinity."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def embed(
        self, image: bytes | None, image_id: str, image_digest: str | None
    ) -> EmbedReply:
        owner = self.handle.options(session_id=image_id)
        return await _retryable(owner.embed.remote(image, image_id, image_digest))

    async def segment(self, request: SegmentRequest) -> SegmentReply:
        assert request.image_id is not None
        owner = self.handle.options(session_id=request.image_id)
        return await _retryable(owner.segment.remote(request))


async def _retryable(response: asyncio.Future | object) -> object:
    try:
        return await response  # type: ignore[misc]
    except BackPressureError as error:
        raise ServiceUnavailableError(
            "the segmenter that owns this image is overloaded; retry shortly",
            retry_after_s=getattr(error, "retry_after_s", None),
        ) from error
    except RETRYABLE as error:
        raise ServiceUnavailableError(
            f"the segmenter that owns this image is unavailable ({type(error).__name__}); "
            "retry shortly"
        ) from error


@serve.ingress()
class Ingress:
    """Thin: the API itself is `deployments.api.create_api`."""

    def __init__(self, segmenter: DeploymentHandle, engine_overrides: dict[str, Any]) -> None:
        # The same engine overrides as the segmenters': image and prompt limits agree.
        self.settings = ServiceSettings(**engine_overrides)
        self.client = HandleSegmenterClient(segmenter)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.client, self.settings)
