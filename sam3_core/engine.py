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
from dataclasses import dataclass

import numpy as np
import torch

from sam3_core.caches import CachedEmbedding, EmbeddingCache, LogitsCache, TextEmbeddingCache
from sam3_core.calls import (
    CacheOutcome,
    ConceptRequest,
    ConceptSegmentation,
    Decoded,
    DecoderFile,
    EmbeddingRequest,
    EmbeddingResult,
    EmbedRequest,
    EmbedResult,
    Segmentation,
    SegmentRequest,
    ServedModel,
)
from sam3_core.concept_model import ConceptQueries, TextEmbedding, cross_prompt_nms, instances
from sam3_core.concept_prompts import (
    check_exemplars_inside,
    exemplar_arrays,
    validate_concept_prompts,
)
from sam3_core.errors import (
    ConceptsDisabledError,
    MaskBudgetError,
)
from sam3_core.images import image_size, load_rgb
from sam3_core.memory import MemoryPlan, plan_memory, release_freed_memory
from sam3_core.model import ImageEmbedding, InteractiveSam3
from sam3_core.onnx_decoder import DecoderExport
from sam3_core.pictures import ImageKey, Pictures
from sam3_core.prompts import (
    DecoderGroup,
    check_inside_image,
    decoder_groups,
    validate_prompt_set,
)
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model, served_model

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EngineStats:
    """Cumulative counters and current sizes, for metrics."""

    embedding_cache_hits: int
    embedding_cache_misses: int
    embedding_cache_handoffs: int
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
    key: ImageKey
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
        on_gpu = model.device.type == "cuda"
        store = settings.embedding_dtype
        self._store_dtype = (
            _DTYPES["bfloat16" if on_gpu else "float32"] if store == "auto" else _DTYPES[store]
        )
        precision = settings.precision
        if precision == "auto":
            precision = "bfloat16" if on_gpu else "float32"
        # sam3 runs on CUDA under a process-wide bf16 autocast (the tracker's `bf16_context`,
        # which sam3_compat undoes); the engine enters the same autocast around its own calls.
        self._bfloat16 = precision == "bfloat16"
        if on_gpu:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.logits = LogitsCache(settings.max_logits_cache_size, settings.logits_cache_bytes)
        self.memory: MemoryPlan | None = None
        if settings.embedding_cache_bytes is None:
            self.memory = plan_memory(
                model.device,
                share=settings.memory_share or 1.0,
                activation_reserve=settings.activation_reserve_bytes,
                logits_cache=0 if settings.disable_logits_cache else settings.logits_cache_bytes,
                text_cache=settings.text_cache_bytes if model.concepts is not None else 0,
                pool=settings.memory_bytes,
                video_sessions=self._video_sessions_planned(settings, on_gpu),
            )
        self.embeddings = EmbeddingCache(
            max_bytes=settings.embedding_cache_bytes or self.memory.embedding_cache,
            max_entries=settings.max_embedding_cache_size,
            # Logits belong to one picture: (key, content digest), never to a key alone.
            on_evict=lambda key, entry: self.logits.drop_image((key, entry.content_digest)),
        )
        self.texts = TextEmbeddingCache(settings.text_cache_bytes)
        self.pictures = Pictures(
            self.embeddings,
            self.logits,
            self._embed_bytes,
            device=model.device,
            store_dtype=self._store_dtype,
            needs_trunk=model.concepts is not None,
            max_image_id_length=settings.max_image_id_length,
        )
        self._counter_lock = threading.Lock()
        self.decoder = DecoderExport(model)
        self._served = served_model(settings, model)
        self._logits_hits = self._logits_misses = 0
        logger.info(
            "embedding cache: %.0f MiB, %d images at most (stored as %s)",
            self.embeddings.max_bytes / 2**20,
            self.embeddings.max_entries,
            self._store_dtype,
        )
        if self.memory is not None:
            logger.info(
                "memory: %.3g of %.0f MiB: held %.0f, activations %.0f, logits %.0f, texts "
                "%.0f, embeddings %.0f, video sessions %.0f MiB",
                self.memory.share,
                self.memory.pool / 2**20,
                *(
                    part / 2**20
                    for part in (
                        self.memory.held,
                        self.memory.activation_reserve,
                        self.memory.logits_cache,
                        self.memory.text_cache,
                        self.memory.embedding_cache,
                        self.memory.video_sessions,
                    )
                ),
            )
        if settings.warmup or (settings.warmup is None and on_gpu):
            self.warm_up()

    @staticmethod
    def _video_sessions_planned(settings: EngineSettings, on_gpu: bool) -> int | None:
        """The video sessions' part of the plan: where they live. On a GPU with sam3's
        tracker state offloaded (`SAM3_VIDEO_OFFLOAD_STATE`), their frames and state are in
        host memory, outside the GPU's plan (0: their budget stays `video_budget`)."""
        if on_gpu and settings.video_offload_state:
            return 0
        return settings.video_session_bytes  # None: the plan's share

    def video_settings(self) -> EngineSettings:
        """The settings for this replica's video sessions: their budget as planned."""
        planned = self.memory.video_sessions if self.memory is not None else 0
        if self.settings.video_session_bytes is None and planned > 0:
            return self.settings.model_copy(update={"video_session_bytes": planned})
        return self.settings

    @classmethod
    def from_settings(cls, settings: EngineSettings | None = None) -> Segmenter:
        """Load the model the settings (by default: the environment) ask for."""
        settings = settings or EngineSettings()
        return cls(load_model(settings), settings)

    def _autocast(self) -> torch.autocast:
        """A new context per use: `torch.autocast` keeps its state on the object."""
        return torch.autocast(self.model.device.type, torch.bfloat16, enabled=self._bfloat16)

    def _embed_bytes(self, image: bytes) -> ImageEmbedding:
        """An image file's embedding, as the caches store it (`Pictures` calls this)."""
        pixels = load_rgb(image, max_pixels=self.settings.max_image_pixels)
        with self._autocast():
            embedding = self.model.encode(torch.from_numpy(pixels).permute(2, 0, 1))
        if self.settings.release_freed_memory and self.model.device.type == "cpu":
            release_freed_memory()  # the embed's working memory
        return embedding.to(self._store_dtype)

    def warm_up(self) -> None:
        """One embed and one decode of a blank picture, outside the caches: the kernels a
        first request would wait for are chosen now."""
        started = time.perf_counter()
        side = self.model.arch.image_size
        with self._autocast():
            embedding = self.model.encode(torch.zeros((3, side, side), dtype=torch.uint8))
            self.model.decode(
                embedding,
                point_coords=np.array([[[side / 2, side / 2]]], dtype=np.float32),
                point_labels=np.ones((1, 1), dtype=np.int32),
            )
        logger.info("warmed up in %.2f s", time.perf_counter() - started)

    def embed(self, request: EmbedRequest) -> EmbedResult:
        """Embed the image under its `image_id` (default: the SHA-256 of its bytes) unless
        the same content is cached under that id already."""
        timings: dict[str, float] = {}
        image_id, _, _, outcome = self.pictures.resolve(request, timings)
        return EmbedResult(image_id=image_id, embedding_cache=outcome, timings=timings)

    def embedding(self, request: EmbeddingRequest) -> EmbeddingResult:
        """The image's decoder inputs (embedding it if needed), for a client that decodes
        clicks itself with `decoder_onnx`."""
        timings: dict[str, float] = {}
        image_id, _, cached, outcome = self.pictures.resolve(request, timings)
        embedding = cached.embedding
        arrays = {
            "image_embed": embedding.image_embed,
            "high_res_feats_0": embedding.high_res_feats[0],
            "high_res_feats_1": embedding.high_res_feats[1],
        }
        return EmbeddingResult(
            image_id=image_id,
            embedding_cache=outcome,
            timings=timings,
            arrays={name: t.float().cpu().numpy() for name, t in arrays.items()},
            orig_hw=embedding.orig_hw,
            decoder=self.decoder.settings,
        )

    def decoder_onnx(self, known_etag: str | None = None) -> DecoderFile:
        """The served decoder as ONNX (exported on first use); no bytes where the caller
        holds `known_etag` already."""
        etag = self.decoder.etag
        return DecoderFile(etag=etag, onnx=None if known_etag == etag else self.decoder.onnx())

    def served_model(self) -> ServedModel:
        """What this engine serves: SAM3's weights, a demo model or random weights."""
        return self._served

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
        prompts = request.prompts
        if request.image is not None:  # from its header: before the embed, if one is needed
            self._check_mask_budget(
                prompts.prediction_count,
                image_size(request.image, max_pixels=settings.max_image_pixels),
            )
        timings: dict[str, float] = {}
        image_id, key, cached, outcome = self.pictures.resolve(request, timings)
        self._check_mask_budget(prompts.prediction_count, cached.embedding.orig_hw)
        # Here, not from the header above: EXIF orientation may swap its sides.
        check_inside_image(prompts, cached.embedding.orig_hw)
        prior = None
        logits_cache: CacheOutcome | None = None
        if request.load_logits_from_cache and not settings.disable_logits_cache:
            picture = (key, cached.content_digest)
            prior = self.logits.find_prior(picture, prompts) if prompts.prompts else None
            logits_cache = "miss" if prior is None else "hit"
            with self._counter_lock:
                self._logits_hits += int(prior is not None)
                self._logits_misses += int(prior is None)
        return SegmentJob(
            request=request,
            image_id=image_id,
            key=key,
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
        prior = job.prior_logits
        with self._autocast():
            decoded = [
                self.model.decode(
                    job.cached.embedding,
                    point_coords=group.point_coords,
                    point_labels=group.point_labels,
                    boxes=group.boxes,
                    mask_input=None if prior is None else prior[list(group.slots)][:, None],
                    multimask_output=job.request.multimask_output,
                )
                for group in job.groups
            ]
        job.timings["decode"] = time.perf_counter() - started
        if len(decoded) == 1:  # one group holds every prompt, in order
            return decoded[0]
        order = np.argsort([slot for group in job.groups for slot in group.slots])
        return Decoded(
            masks=np.concatenate([d.masks for d in decoded])[order],
            scores=np.concatenate([d.scores for d in decoded])[order],
            low_res_logits=np.concatenate([d.low_res_logits for d in decoded])[order],
        )

    def finish(self, job: SegmentJob, decoded: Decoded) -> Segmentation:
        """After the decoder: keep the logits where asked, and the result."""
        request = job.request
        digest = job.cached.content_digest
        if (
            request.save_logits_to_cache
            and not self.settings.disable_logits_cache
            and request.prompts.prompts
            # Not for a picture the key no longer holds (re-sent with new bytes meanwhile).
            and self.embeddings.holds(job.key, digest)
        ):
            self.logits.put((job.key, digest), request.prompts, decoded.low_res_logits)
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
        image_id, _, cached, outcome = self.pictures.resolve(request, timings)
        embedding = cached.embedding
        check_exemplars_inside(prompts, embedding.orig_hw)
        assert embedding.trunk is not None, "a model with concepts keeps the trunk output"
        started = time.perf_counter()
        with self._autocast():
            texts, text_cache = self._text_embeddings(
                [p.query_text for p in prompts], request.tenant or ""
            )
            timings["text"] = time.perf_counter() - started
            started = time.perf_counter()
            queries = ConceptQueries(
                texts=texts, exemplars=exemplar_arrays(prompts, embedding.orig_hw)
            )
            grounding = concepts.ground(concepts.detector_features(embedding.trunk), queries)
        timings["ground"] = time.perf_counter() - started
        started = time.perf_counter()
        thresholds = [
            request.output_prob_thresh if p.output_prob_thresh is None else p.output_prob_thresh
            for p in prompts
        ]
        found = instances(
            grounding,
            embedding.orig_hw,
            thresholds,
            settings.max_concept_instances,
            settings.max_mask_pixels,
        )
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

    def _text_embeddings(
        self, texts: list[str], tenant: str
    ) -> tuple[list[TextEmbedding], CacheOutcome]:
        """One embedding per text: from the cache, the misses encoded in one batch. Cached
        per tenant: a key's hit must not tell it which texts another key asked for."""
        assert self.model.concepts is not None
        found = {text: self.texts.get((tenant, text)) for text in dict.fromkeys(texts)}
        missing = [text for text, entry in found.items() if entry is None]
        if missing:
            for text, entry in zip(missing, self.model.concepts.encode_texts(missing), strict=True):
                self.texts.put((tenant, text), entry)
                found[text] = entry
        return [found[text] for text in texts], "miss" if missing else "hit"  # type: ignore[misc]

    def stats(self) -> EngineStats:
        return EngineStats(
            embedding_cache_hits=self.pictures.hits,
            embedding_cache_misses=self.pictures.misses,
            embedding_cache_handoffs=self.pictures.handoffs,
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

    def _check_mask_budget(self, masks: int, size: tuple[int, int]) -> None:
        pixels = masks * size[0] * size[1]
        if pixels > self.settings.max_mask_pixels:
            raise MaskBudgetError(
                f"{masks} mask(s) of {size[1]}x{size[0]} pixels are {pixels} mask pixels, the "
                f"limit is {self.settings.max_mask_pixels} (SAM3_MAX_MASK_PIXELS): send fewer "
                "prompts per request"
            )
