"""How the ingress reaches the replica that owns an image: `RayOwners` over a Ray Serve
handle with consistent-hash affinity (`session_id=image_id`), or `LocalOwners`, one engine
in this process (tests, or the API without Ray)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Protocol

import anyio
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from deployments.operations import Operation, Reply, run
from sam3_core.calls import DecoderFile, ImageRequest, ServedModel
from sam3_core.errors import ImageBytesNeededError, Sam3Error

SERVED_MODEL_TTL_S = 30.0

# Failures after which the same request, sent again, can succeed: the owner replica was
# overloaded, or died and is being replaced (its images then move to a new owner).
RETRYABLE = (
    BackPressureError,
    DeploymentUnavailableError,
    RayActorError,
    ActorDiedError,
    ActorUnavailableError,
)


class ServiceUnavailableError(Sam3Error):
    """Retryable: overloaded (backpressure), or the image's replica is gone or restarting."""

    code = "service_unavailable"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Owners(Protocol):
    """Runs an operation on the replica that owns the request's image."""

    async def call(self, operation: Operation, request: ImageRequest) -> Reply: ...

    async def decoder(self, known_etag: str | None) -> DecoderFile:
        """The served decoder as ONNX, from any replica (all serve the same weights)."""
        ...

    async def served_model(self) -> ServedModel:
        """What the replicas serve, from any of them."""
        ...


class RayOwners:
    """The segmenter deployment's replicas, reached through `handle`; its request router
    (consistent hashing, set by the application builder) picks the owner of `image_id`."""

    def __init__(self, handle: DeploymentHandle, digest_first: bool = True) -> None:
        self.handle = handle
        self._served: tuple[float, ServedModel] | None = None
        # Only where the router sends an image's requests to one replica: otherwise the
        # bytes that follow a digest land elsewhere (round robin: always on the other one).
        self.digest_first = digest_first

    async def call(self, operation: Operation, request: ImageRequest) -> Reply:
        method = getattr(self.handle.options(session_id=owner_key(request)), operation.name)
        if self.digest_first and request.image is not None and request.image_digest is not None:
            # Digest first: a client that resends an image its owner holds (the
            # inference-sdk does with every click) costs no transfer of the bytes.
            outcome = await _unavailable_as_503(method.remote(replace(request, image=None)))
            if not isinstance(outcome, ImageBytesNeededError):
                return _reply_or_raise(outcome)
        return _reply_or_raise(await _unavailable_as_503(method.remote(request)))

    async def decoder(self, known_etag: str | None) -> DecoderFile:
        return await _unavailable_as_503(self.handle.decoder_onnx.remote(known_etag))

    async def served_model(self) -> ServedModel:
        # Kept a while: it changes only with a redeploy, and every Label Studio prediction
        # names it (a replica's answer would wait for its turn behind images).
        if self._served is None or time.monotonic() - self._served[0] > SERVED_MODEL_TTL_S:
            served = await _unavailable_as_503(self.handle.served_model.remote())
            self._served = (time.monotonic(), served)
        return self._served[1]


class LocalOwners:
    """One engine (`sam3_core.Segmenter`) in this process, the owner of every image; the
    engine's calls run in a worker thread, as on a replica."""

    def __init__(self, engine: Any, replica: str = "local") -> None:
        self.engine = engine
        self.replica = replica

    async def call(self, operation: Operation, request: ImageRequest) -> Reply:
        return await anyio.to_thread.run_sync(run, self.engine, operation, request, self.replica)

    async def decoder(self, known_etag: str | None) -> DecoderFile:
        return await anyio.to_thread.run_sync(self.engine.decoder_onnx, known_etag)

    async def served_model(self) -> ServedModel:
        return self.engine.served_model()


def owner_key(request: ImageRequest) -> str:
    """What the router hashes: one owner per (tenant, image_id), so tenants never share a
    cache entry."""
    assert request.image_id is not None, "the ingress resolves the image_id first"
    return request.image_id if request.tenant is None else f"{request.tenant}:{request.image_id}"


def _reply_or_raise(outcome: Reply | Sam3Error) -> Reply:
    if isinstance(outcome, Sam3Error):
        raise outcome  # the replica's refusal, sent as a value (deployments.segmenter)
    return outcome


async def _unavailable_as_503(response: DeploymentResponse) -> Any:
    """The reply, with Ray's retryable failures translated into `ServiceUnavailableError`."""
    try:
        return await response
    except BackPressureError as error:
        # Retry-After: the ingress's SAM3_RETRY_AFTER_SECONDS, not the segmenter's option.
        raise ServiceUnavailableError(
            "the segmenter that owns this image is overloaded; retry shortly"
        ) from error
    except RETRYABLE as error:
        raise ServiceUnavailableError(
            f"the segmenter that owns this image is unavailable ({type(error).__name__}); "
            "retry shortly"
        ) from error
