"""`Segmenter`: the engine. Embeds an image once, keeps the embedding, decodes prompts.

    segmenter = Segmenter.from_settings(EngineSettings(random_weights="tiny"))
    image_id = segmenter.embed(EmbedRequest(image=png_bytes)).image_id
    result = segmenter.segment(SegmentRequest(image_id=image_id, prompts=PromptSet(...)))

    result = segmenter.concept_segment(ConceptRequest(image_id=image_id, prompts=(...)))

A segmentation runs in three stages, `prepare` → `decode` → `finish`: only `decode` runs the
model, so that a batcher can collect the decode stage of several requests. Every public
method is synchronous, thread-safe and may block for a model call: the serving layer calls
them from worker threads, off its event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from sam3_core.caches import CachedEmbedding, EmbeddingCache, LogitsCache, TextEmbeddingCache
from sam3_core.calls import (
    CacheOutcome,
    ConceptRequest,
    ConceptSegmentation,
    Decoded,
    EmbedRequest,
    EmbedResult,
    ImageRequest,
    Segmentation,
    SegmentRequest,
)
from sam3_core.concept_model import ConceptQueries, TextEmbedding, cross_prompt_nms, instances
from sam3_core.concept_prompts import exemplar_arrays, validate_concept_prompts
from sam3_core.errors import ConceptsDisabledError, ImageNotCachedError, InvalidImageError
from sam3_core.images import check_image_id, content_id, load_rgb
from sam3_core.memory import default_cache_budget, release_freed_memory
from sam3_core.model import InteractiveSam3
from sam3_core.prompts import DecoderGroup, decoder_groups, validate_prompt_set
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    text_cache_hits: int = 0
    text_cache_misses: int = 0
    text_cache_entries: int = 0
    text_cache_bytes: int = 0


@dataclass(frozen=True)
class SegmentJob:
    """A segmentation between its stages: what `prepare` found for `decode` and `finish`.

    Attributes:
        prior_logits: (P, L, L) float32 logits of an earlier prompt set, or None.
        groups: the decoder calls the prompts split into.
    """

    request: SegmentRequest
    image_id: str
    cached: CachedEmbedding
    embedding_cache: CacheOutcome
    prior_logits: np.ndarray | None
    logits_cache: CacheOutcome | None
    groups: list[DecoderGroup]
    timings: dict[str, float]


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
        self.texts = TextEmbeddingCache(settings.text_cache_bytes)
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

    def embed(self, request: EmbedRequest) -> EmbedResult:
        """Embed the image under its `image_id` (default: the SHA-256 of its bytes) unless
        the same content is cached under that id already."""
        timings: dict[str, float] = {}
        image_id, _, outcome = self._embedding(request, timings)
        return EmbedResult(image_id=image_id, embedding_cache=outcome, timings=timings)

    def segment(self, request: SegmentRequest) -> Segmentation:
        """Masks for every prompt of `request`: `prepare`, `decode`, `finish` in a row."""
        job = self.prepare(request)
        return self.finish(job, self.decode(job))

    def prepare(self, request: SegmentRequest) -> SegmentJob:
        """Everything before the model's decoder: check the prompts, find (or compute) the
        image's embedding and the prior logits the request asks for."""
        settings = self.settings
        validate_prompt_set(
            request.prompts,
            max_prompts=settings.max_prompts,
            max_points=settings.max_points_per_prompt,
        )
        timings: dict[str, float] = {}
        image_id, cached, outcome = self._embedding(request, timings)
        prompts = request.prompts
        prior = None
        logits_cache: CacheOutcome | None = None
        if request.load_logits_from_cache and not settings.disable_logits_cache:
            prior = self.logits.find_prior(image_id, prompts) if prompts.prompts else None
            logits_cache = "miss" if prior is None else "hit"
            with self._counter_lock:
                self._logits_hits += int(prior is not None)
                self._logits_misses += int(prior is None)
        return SegmentJob(
            request=request,
            image_id=image_id,
            cached=cached,
            embedding_cache=outcome,
            prior_logits=prior,
            logits_cache=logits_cache,
            groups=decoder_groups(prompts),
            timings=timings,
        )

    def decode(self, job: SegmentJob) -> Decoded:
        """The model's part: every decoder group of the job, merged back in prompt order."""
        started = time.perf_counter()
        count = job.request.prompts.prediction_count
        height, width = job.cached.embedding.orig_hw
        side = self.model.arch.low_res_size
        masks = np.zeros((count, height, width), dtype=bool)
        scores = np.zeros(count, dtype=np.float32)
        low_res = np.zeros((count, side, side), dtype=np.float32)
        prior = job.prior_logits
        for group in job.groups:
            slots = list(group.slots)
            decoded = self.model.decode(
                job.cached.embedding,
                point_coords=group.point_coords,
                point_labels=group.point_labels,
                boxes=group.boxes,
                mask_input=None if prior is None else prior[slots][:, None],
                multimask_output=job.request.multimask_output,
            )
            masks[slots], scores[slots], low_res[slots] = (
                decoded.masks,
                decoded.scores,
                decoded.low_res_logits,
            )
        job.timings["decode"] = time.perf_counter() - started
        return Decoded(masks, scores, low_res)

    def finish(self, job: SegmentJob, decoded: Decoded) -> Segmentation:
        """After the decoder: keep the logits where asked, and the result."""
        request = job.request
        if (
            request.save_logits_to_cache
            and not self.settings.disable_logits_cache
            and request.prompts.prompts
        ):
            self.logits.put(job.image_id, request.prompts, decoded.low_res_logits)
        return Segmentation(
            image_id=job.image_id,
            embedding_cache=job.embedding_cache,
            timings=job.timings,
            decoded=decoded,
            logits_cache=job.logits_cache,
        )

    def concept_segment(self, request: ConceptRequest) -> ConceptSegmentation:
        """Every instance of each concept prompt (text, box exemplars, or both) on the image,
        all prompts in one pass of sam3's detector, from the image's cached trunk output: an
        image embedded once serves clicks and concept queries alike."""
        concepts = self.model.concepts
        if concepts is None:
            raise ConceptsDisabledError(
                "this deployment serves interactive segmentation only (SAM3_CONCEPTS=false); "
                "concept_segment needs SAM3_CONCEPTS=true"
            )
        settings = self.settings
        prompts = list(request.prompts)
        validate_concept_prompts(
            prompts,
            output_prob_thresh=request.output_prob_thresh,
            nms_iou_threshold=request.nms_iou_threshold,
            max_prompts=settings.max_concept_prompts,
            max_boxes=settings.max_concept_boxes,
            max_text_length=settings.max_text_length,
        )
        timings: dict[str, float] = {}
        image_id, cached, outcome = self._embedding(request, timings)
        embedding = cached.embedding
        assert embedding.trunk is not None, "a model with concepts keeps the trunk output"
        started = time.perf_counter()
        texts, text_cache = self._text_embeddings([p.query_text for p in prompts])
        timings["text"] = time.perf_counter() - started
        started = time.perf_counter()
        queries = ConceptQueries(texts=texts, exemplars=exemplar_arrays(prompts, embedding.orig_hw))
        grounding = concepts.ground(concepts.detector_features(embedding.trunk), queries)
        timings["ground"] = time.perf_counter() - started
        started = time.perf_counter()
        thresholds = [
            request.output_prob_thresh if p.output_prob_thresh is None else p.output_prob_thresh
            for p in prompts
        ]
        found = instances(grounding, embedding.orig_hw, thresholds, settings.max_concept_instances)
        if request.nms_iou_threshold is not None:
            found = cross_prompt_nms(found, request.nms_iou_threshold)
        timings["masks"] = time.perf_counter() - started
        return ConceptSegmentation(
            image_id=image_id,
            embedding_cache=outcome,
            timings=timings,
            prompt_results=found,
            text_cache=text_cache,
        )

    def _text_embeddings(self, texts: list[str]) -> tuple[list[TextEmbedding], CacheOutcome]:
        """One embedding per text: from the cache, the misses encoded in one batch."""
        assert self.model.concepts is not None
        found = {text: self.texts.get(text) for text in dict.fromkeys(texts)}
        missing = [text for text, entry in found.items() if entry is None]
        if missing:
            for text, entry in zip(missing, self.model.concepts.encode_texts(missing), strict=True):
                self.texts.put(text, entry)
                found[text] = entry
        return [found[text] for text in texts], "miss" if missing else "hit"  # type: ignore[misc]

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
            text_cache_hits=self.texts.hits,
            text_cache_misses=self.texts.misses,
            text_cache_entries=len(self.texts),
            text_cache_bytes=self.texts.nbytes,
        )

    def _embedding(
        self, request: ImageRequest, timings: dict[str, float]
    ) -> tuple[str, CachedEmbedding, CacheOutcome]:
        """The request's image id and cached embedding, computed first where needed (then
        `timings["embed"]` says how long that took)."""
        image, image_id = request.image, request.image_id
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
            return image_id, cached, "hit"
        digest = request.image_digest or content_id(image)
        image_id = image_id or digest
        cached = self.embeddings.get(image_id)
        if cached is not None and cached.content_digest == digest:
            self._count(hit=True)
            return image_id, cached, "hit"
        started = time.perf_counter()
        cached, outcome = self._embed_once(image, image_id, digest)
        if outcome == "miss":
            timings["embed"] = time.perf_counter() - started
        return image_id, cached, outcome

    def _embed_once(
        self, image: bytes, image_id: str, digest: str
    ) -> tuple[CachedEmbedding, CacheOutcome]:
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
            return pending.result(), "hit"
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
            return cached, "miss"
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
