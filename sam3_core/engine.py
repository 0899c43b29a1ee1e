"""`Segmenter`: the engine. Embeds an image once, keeps the embedding, decodes prompts.

    segmenter = Segmenter.from_settings(EngineSettings(random_weights="tiny"))
    image_id = segmenter.embed(png_bytes).image_id
    result = segmenter.segment(SegmentRequest(image_id=image_id, prompts=PromptSet(...)))

Every public method is synchronous, thread-safe and may block for a model call: the serving
layer calls them from worker threads, off its event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sam3_core.caches import CachedEmbedding, EmbeddingCache, LogitsCache
from sam3_core.errors import ImageNotCachedError, InvalidImageError
from sam3_core.images import check_image_id, content_id, load_rgb
from sam3_core.masks import mask_to_polygons, masks_to_rle
from sam3_core.memory import default_cache_budget, release_freed_memory
from sam3_core.model import InteractiveSam3
from sam3_core.prompts import decoder_groups, validate_prompt_set
from sam3_core.schemas import Prediction, RleMask, SegmentRequest
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EmbedResult:
    image_id: str
    cache_hit: bool
    embed_seconds: float


@dataclass(frozen=True)
class Masks:
    """One entry per prompt, in prompt order (one entry when there is no prompt).

    Attributes:
        masks: (P, H, W) bool at the original image size.
        scores: (P,) float32.
        low_res_logits: (P, L, L) float32, L = 288 at 1008 px.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


@dataclass(frozen=True)
class SegmentResult:
    image_id: str
    masks: Masks
    predictions: list[Prediction]
    embedding_cache_hit: bool
    logits_cache_hit: bool | None  # None when the request did not ask to load logits
    embed_seconds: float
    decode_seconds: float


@dataclass(frozen=True)
class EngineStats:
    """Cumulative counters and current sizes, for metrics."""

    embedding_cache_hits: int
    embedding_cache_misses: int
    embedding_cache_evictions: int
    embedding_cache_bytes: int
    embedding_cache_entries: int
    embedding_cache_budget_bytes: int
    logits_cache_hits: int
    logits_cache_misses: int
    logits_cache_entries: int
    logits_cache_bytes: int


class Segmenter:
    """Interactive SAM3 segmentation with an embedding cache and a logits cache."""

    def __init__(self, model: InteractiveSam3, settings: EngineSettings) -> None:
        self.model = model
        self.settings = settings
        self._store_dtype = _DTYPES[settings.embedding_dtype]
        self.logits = LogitsCache(settings.max_logits_cache_size, settings.logits_cache_bytes)
        self.embeddings = EmbeddingCache(
            max_bytes=settings.embedding_cache_bytes or default_cache_budget(model.device),
            max_entries=settings.max_embedding_cache_size,
            on_evict=self.logits.drop_image,
        )
        self._inflight: dict[tuple[str, str], Future[CachedEmbedding]] = {}
        self._inflight_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._hits = self._misses = self._logits_hits = self._logits_misses = 0
        logger.info(
            "embedding cache: %.0f MiB, %d images at most (%s)",
            self.embeddings.max_bytes / 2**20,
            self.embeddings.max_entries,
            settings.embedding_dtype,
        )

    @classmethod
    def from_settings(cls, settings: EngineSettings | None = None) -> Segmenter:
        """Load the model the settings (by default: the environment) ask for."""
        settings = settings or EngineSettings()
        return cls(load_model(settings), settings)

    def embed(
        self,
        image: bytes | None = None,
        image_id: str | None = None,
        image_digest: str | None = None,
    ) -> EmbedResult:
        """Embed `image` under `image_id` (default: the SHA-256 of its bytes) unless the same
        content is cached under that id already."""
        started = time.perf_counter()
        image_id, _, hit = self._embedding(image, image_id, image_digest)
        return EmbedResult(image_id, hit, 0.0 if hit else time.perf_counter() - started)

    def segment(self, request: SegmentRequest) -> SegmentResult:
        """Masks for every prompt of `request`, also encoded in its wire format."""
        settings = self.settings
        validate_prompt_set(
            request.prompts,
            max_prompts=settings.max_prompts,
            max_points=settings.max_points_per_prompt,
        )
        started = time.perf_counter()
        image_id, cached, hit = self._embedding(
            request.image, request.image_id, request.image_digest
        )
        embed_seconds = 0.0 if hit else time.perf_counter() - started
        prompts = request.prompts
        prior = None
        logits_hit = None
        if request.load_logits_from_cache and not settings.disable_logits_cache:
            prior = self.logits.find_prior(image_id, prompts) if prompts.prompts else None
            logits_hit = prior is not None
            with self._counter_lock:
                self._logits_hits += int(logits_hit)
                self._logits_misses += int(not logits_hit)
        count = prompts.prediction_count
        height, width = cached.embedding.orig_hw
        side = self.model.arch.low_res_size
        masks = np.zeros((count, height, width), dtype=bool)
        scores = np.zeros(count, dtype=np.float32)
        low_res = np.zeros((count, side, side), dtype=np.float32)
        for group in decoder_groups(prompts):
            slots = list(group.slots)
            decoded = self.model.decode(
                cached.embedding,
                point_coords=group.point_coords,
                point_labels=group.point_labels,
                boxes=group.boxes,
                mask_input=None if prior is None else prior[slots][:, None],
                multimask_output=request.multimask_output,
            )
            masks[slots], scores[slots], low_res[slots] = (
                decoded.masks,
                decoded.scores,
                decoded.low_res_logits,
            )
        if request.save_logits_to_cache and not settings.disable_logits_cache and prompts.prompts:
            self.logits.put(image_id, prompts, low_res)
        result = Masks(masks, scores, low_res)
        return SegmentResult(
            image_id=image_id,
            masks=result,
            predictions=encode_predictions(result, request.mask_format),
            embedding_cache_hit=hit,
            logits_cache_hit=logits_hit,
            embed_seconds=embed_seconds,
            decode_seconds=time.perf_counter() - started - embed_seconds,
        )

    def stats(self) -> EngineStats:
        return EngineStats(
            embedding_cache_hits=self._hits,
            embedding_cache_misses=self._misses,
            embedding_cache_evictions=self.embeddings.evictions,
            embedding_cache_bytes=self.embeddings.nbytes,
            embedding_cache_entries=len(self.embeddings),
            embedding_cache_budget_bytes=self.embeddings.max_bytes,
            logits_cache_hits=self._logits_hits,
            logits_cache_misses=self._logits_misses,
            logits_cache_entries=len(self.logits),
            logits_cache_bytes=self.logits.nbytes,
        )

    def _embedding(
        self, image: bytes | None, image_id: str | None, image_digest: str | None
    ) -> tuple[str, CachedEmbedding, bool]:
        """(image_id, cached embedding, whether it was a cache hit)."""
        if image_id is not None:
            check_image_id(image_id, max_length=self.settings.max_image_id_length)
        if image is None:
            if image_id is None:
                raise InvalidImageError("send the image, or the image_id of an embedded image")
            cached = self.embeddings.get(image_id)
            if cached is None:
                self._count(hit=False)
                raise ImageNotCachedError(
                    f"image_id {image_id!r} is not cached on this replica: send the image again"
                )
            self._count(hit=True)
            return image_id, cached, True
        digest = image_digest or content_id(image)
        image_id = image_id or digest
        cached = self.embeddings.get(image_id)
        if cached is not None and cached.content_digest == digest:
            self._count(hit=True)
            return image_id, cached, True
        return image_id, *self._embed_once(image, image_id, digest)

    def _embed_once(self, image: bytes, image_id: str, digest: str) -> tuple[CachedEmbedding, bool]:
        """Embed, with concurrent requests for the same image waiting on one computation."""
        key = (image_id, digest)
        with self._inflight_lock:
            pending = self._inflight.get(key)
            owner = pending is None
            if owner:
                pending = self._inflight[key] = Future()
        assert pending is not None
        if not owner:
            self._count(hit=True)
            return pending.result(), True
        try:
            pixels = load_rgb(image, max_pixels=self.settings.max_image_pixels)
            embedding = self.model.encode(torch.from_numpy(pixels).permute(2, 0, 1))
            cached = CachedEmbedding(embedding.to(self._store_dtype), digest)
            if not self.embeddings.put(image_id, cached):
                logger.warning(
                    "embedding of %s (%d bytes) is over the cache budget; not cached",
                    image_id,
                    cached.nbytes,
                )
            if self.settings.release_freed_memory and self.model.device.type == "cpu":
                release_freed_memory()  # the embed's working memory, evicted embeddings
            self._count(hit=False)
            pending.set_result(cached)
            return cached, False
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            with self._inflight_lock:
                del self._inflight[key]

    def _count(self, *, hit: bool) -> None:
        with self._counter_lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1


def encode_predictions(masks: Masks, mask_format: Literal["polygon", "rle"]) -> list[Prediction]:
    if mask_format == "rle":
        return [
            Prediction(masks=RleMask(**rle), confidence=float(score), format="rle")
            for rle, score in zip(masks_to_rle(masks.masks), masks.scores, strict=True)
        ]
    return [
        Prediction(masks=mask_to_polygons(mask), confidence=float(score), format="polygon")
        for mask, score in zip(masks.masks, masks.scores, strict=True)
    ]
