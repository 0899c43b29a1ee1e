"""The segmenter deployment: one `sam3_core.Segmenter` per replica, each replica the owner of
the images routed to it by consistent hashing on `image_id`.

The engine's calls block (model and image decoding), so they run on a small thread pool,
never on the replica's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from ray import serve

from deployments.messages import EmbedReply, SegmentReply
from deployments.metrics import SegmenterMetrics
from sam3_core.engine import Segmenter, SegmentRequest, SegmentResult
from sam3_core.schemas import predictions_json
from sam3_core.settings import EngineSettings

logger = logging.getLogger("ray.serve")

T = TypeVar("T")


class SegmenterDeployment:
    """Embeds and decodes for the images it owns. Options (replicas, GPUs, router) are set by
    the application builder (`deployments.app`) and `serve_config.yaml`."""

    def __init__(self, engine_overrides: dict[str, Any], threads: int) -> None:
        settings = EngineSettings(**engine_overrides)
        self.engine = Segmenter.from_settings(settings)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sam3")
        self.metrics = SegmenterMetrics()
        self.metrics.record_stats(self.engine.stats())
        logger.info(
            "segmenter %s: %s model on %s, %d worker threads",
            self.replica,
            self.engine.model.arch.name,
            self.engine.model.device,
            threads,
        )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.metrics.record_stats(self.engine.stats())

    async def embed(
        self, image: bytes | None, image_id: str, image_digest: str | None
    ) -> EmbedReply:
        result = await self._run(self.engine.embed, image, image_id, image_digest)
        if not result.cache_hit:
            self.metrics.embed_latency.observe(result.embed_seconds)
        return EmbedReply(result.image_id, result.cache_hit, self.replica)

    async def segment(self, request: SegmentRequest) -> SegmentReply:
        result, body = await self._run(self._segment, request)
        if not result.embedding_cache_hit:
            self.metrics.embed_latency.observe(result.embed_seconds)
        self.metrics.decode_latency.observe(result.decode_seconds)
        return SegmentReply(body, result.embedding_cache_hit, self.replica, result.logits_cache_hit)

    def _segment(self, request: SegmentRequest) -> tuple[SegmentResult, bytes]:
        result = self.engine.segment(request)
        return result, predictions_json(result.predictions)

    def check_health(self) -> None:
        """Ray Serve restarts the replica if this raises."""
        if self.engine.model.device.type == "cuda":
            torch.cuda.synchronize(self.engine.model.device)  # raises on a faulted GPU
