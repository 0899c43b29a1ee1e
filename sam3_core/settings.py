"""Configuration, read from the environment once per process (README, Environment).

`RequestLimits` is what one request may carry; the engine and the HTTP ingress both apply
it (the ingress's own settings, in `deployments.settings`, add to it, never the model's).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class RequestLimits(BaseSettings):
    """Limits of one request. Every field is read from `SAM3_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="SAM3_", extra="ignore", populate_by_name=True, frozen=True
    )

    max_image_bytes: int = Field(25 * MiB, gt=0, description="Encoded image size limit.")
    max_image_pixels: int = Field(64 * MiB, gt=0, description="width x height limit.")
    max_prompts: int = Field(64, ge=1, description="Prompts in one request.")
    max_points_per_prompt: int = Field(64, ge=1, description="Points in one prompt.")
    max_image_id_length: int = Field(256, ge=16, description="Characters in an image_id.")
    max_mask_pixels: int = Field(
        256 * MiB,
        gt=0,
        description="Mask pixels one request may produce (masks x height x width); past it "
        "the request is refused before any model call.",
    )
    max_concept_prompts: int = Field(
        16, ge=1, description="Prompts in one concept_segment request (one query each)."
    )
    max_concept_boxes: int = Field(
        64, ge=1, description="Exemplar boxes in one concept_segment request, all prompts."
    )
    max_text_length: int = Field(
        256, ge=1, description="Characters of a concept prompt's text (sam3 reads 32 tokens)."
    )


# The video sessions' budget where no memory plan chooses one.
DEFAULT_VIDEO_SESSION_BYTES = 4096 * MiB
# The share of a replica's caches that its memory plan gives video sessions by default.
VIDEO_SESSIONS_SHARE = 0.25


class VideoSettings(BaseSettings):
    """Video sessions (`sam3_core.video_sessions`): their limits. Every field is read from
    `SAM3_<NAME>` (all named `SAM3_VIDEO_...`)."""

    model_config = SettingsConfigDict(
        env_prefix="SAM3_", extra="ignore", populate_by_name=True, frozen=True
    )

    video_max_sessions: int = Field(8, ge=1, description="Open video sessions per replica.")
    video_session_bytes: int | None = Field(
        None,
        gt=0,
        description="Byte budget of all video sessions of a replica: kept frames and sam3's "
        "tracking state (memories, per-frame outputs). Unset: a quarter of what the replica's "
        "memory plan leaves for caches (counted in the plan, beside the image caches), or "
        "4 GiB where no plan is made (SAM3_EMBEDDING_CACHE_BYTES set).",
    )
    video_max_frames: int = Field(1800, ge=1, description="Frames of one video (60 s at 30 fps).")
    video_max_video_bytes: int = Field(
        28 * MiB,
        gt=0,
        description="Encoded bytes of one video: the MP4/WebM, or the sum of its frames (as "
        "base64 the request must fit SAM3_MAX_REQUEST_BYTES too).",
    )
    video_idle_seconds: float = Field(
        900.0, gt=0, description="A session untouched this long is closed (then 404)."
    )
    video_cache_idle_seconds: float = Field(
        30.0,
        ge=0,
        description="A session untouched this long drops its per-frame caches (sam3's "
        "feature_cache: the last frame's features and detector outputs, ~70 MB at 1008 px), "
        "computed again, alike, by the request that next needs them. Every idle session does "
        "so when the sessions go over SAM3_VIDEO_SESSION_BYTES.",
    )
    video_frame_format: Literal["png", "jpeg"] = Field(
        "png",
        description="How frames decoded from a video file are kept: png (lossless, results "
        "equal sam3's) or jpeg (quality 95, ~5x smaller, masks may differ at edges).",
    )
    video_offload_state: bool = Field(
        True,
        description="Keep sam3's tracker state (memories, masks) in host memory on a GPU, as "
        "its offload_state_to_cpu option does; it is moved to the GPU per frame.",
    )

    @property
    def video_budget(self) -> int:
        """`video_session_bytes`, or its default where no memory plan set it."""
        return self.video_session_bytes or DEFAULT_VIDEO_SESSION_BYTES


class EngineSettings(RequestLimits, VideoSettings):
    """Settings of `sam3_core`: the model, its caches and the request limits.

    Names borrowed from Roboflow's inference server (`SAM3_MAX_EMBEDDING_CACHE_SIZE`,
    `SAM3_MAX_LOGITS_CACHE_SIZE`, `DISABLE_SAM3_LOGITS_CACHE`) keep their meaning.
    """

    # Model and weights.
    checkpoint: str | None = Field(
        None, description="Path to SAM3 weights (sam3.pt), or hf://facebook/sam3."
    )
    random_weights: Literal["tiny", "narrow", "full"] | None = Field(
        None,
        description="Random weights for tests, smoke runs and benchmarks: 'tiny', 'narrow' "
        "(1008 px, narrow widths) or 'full'.",
    )
    random_seed: int = Field(0, description="Seed of the random weights (same on every replica).")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    concepts: bool = Field(
        True,
        description="Serve concept segmentation (/sam3/concept_segment): builds sam3's text "
        "encoder and detector, and keeps each image's trunk output beside its interactive "
        "embedding. false: interactive-only (smaller model, smaller cache entries).",
    )
    max_hole_area: float = Field(
        256.0,
        ge=0,
        description="sam3's hole filling on low-res masks (pixels); 0 turns it off.",
    )

    # Caches.
    embedding_cache_bytes: int | None = Field(
        None,
        gt=0,
        description="Byte budget of the embedding cache; unset: chosen from device memory.",
    )
    memory_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of the node's memory (or of its GPU's) this process may use: "
        "model, activation reserve and every cache. Unset: 1 outside Ray; under Ray Serve, 1 / "
        "the segmenter replicas that can run on the node (or the GPU).",
    )
    memory_bytes: int | None = Field(
        None,
        gt=0,
        description="The memory the replicas of a node (or a GPU) share. Unset: under Ray "
        "Serve the node's memory as Ray counts it (or the GPU's); outside Ray, free RAM plus "
        "what the process holds (or the GPU's memory).",
    )
    activation_reserve_bytes: int = Field(
        1024 * MiB,
        ge=0,
        description="Working memory of requests in flight, kept out of the caches' budget.",
    )
    max_embedding_cache_size: int = Field(100, ge=1, description="Count limit (Roboflow's).")
    embedding_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Precision the cached image embeddings are stored in; auto: bfloat16 on "
        "a GPU (~10 MiB per image at 1008 px), float32 on the CPU.",
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Autocast of embeds and decodes; auto: bfloat16 on a GPU, as sam3 and "
        "Roboflow run SAM3 there (TF32 matmuls allowed too), float32 on the CPU.",
    )
    warmup: bool | None = Field(
        None,
        description="Embed and decode a blank picture when the engine starts, so the first "
        "client does not pay kernel selection; unset: on a GPU only.",
    )
    text_cache_bytes: int = Field(
        64 * MiB,
        gt=0,
        description="Byte budget of the text-embedding cache (concepts; ~32 KiB per text at "
        "full size).",
    )
    max_concept_instances: int = Field(
        100, ge=1, description="Instances one concept prompt returns at most (highest scores)."
    )
    max_logits_cache_size: int = Field(1000, ge=1, description="Count limit (Roboflow's).")
    logits_cache_bytes: int = Field(512 * MiB, gt=0, description="Byte budget of the logits cache.")
    release_freed_memory: bool = Field(
        True,
        description="On the CPU, hand freed heap memory back to the OS after each embed "
        "(glibc malloc_trim), so the process stays at its cache budget.",
    )
    disable_logits_cache: bool = Field(
        False,
        validation_alias=AliasChoices("DISABLE_SAM3_LOGITS_CACHE", "disable_logits_cache"),
        description="Ignore save_logits_to_cache / load_logits_from_cache (Roboflow's name).",
    )

    @field_validator("random_weights", "checkpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value
