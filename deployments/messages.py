"""What crosses between the ingress and the segmenter replicas: image bytes (once), prompts
(`sam3_core.engine.SegmentRequest`) and encoded masks. Embeddings never leave a replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sam3_core.errors import Sam3Error
from sam3_core.schemas import SegmentRequest


@dataclass(frozen=True)
class EmbedReply:
    image_id: str
    cache_hit: bool
    replica: str


@dataclass(frozen=True)
class SegmentReply:
    """`predictions_json`: the response's `predictions` array, JSON-encoded by the replica
    (in its worker thread), so the ingress neither unpickles nor re-encodes nested lists."""

    predictions_json: bytes
    cache_hit: bool
    replica: str
    logits_cache_hit: bool | None = None  # None when the request did not load logits


class ServiceUnavailableError(Sam3Error):
    """Retryable: overloaded (backpressure), or the image's replica is gone or restarting."""

    code = "service_unavailable"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SegmenterClient(Protocol):
    """How the HTTP API reaches the segmenter that owns an image."""

    async def embed(
        self, image: bytes | None, image_id: str, image_digest: str | None
    ) -> EmbedReply: ...

    async def segment(self, request: SegmentRequest) -> SegmentReply: ...
