"""What each engine operation is asked and what it returns. No torch here: the CPU ingress
builds the requests, the segmenter replicas run them.

An image is named by `image_id`; its bytes (`image`, the file as sent: PNG, JPEG, ...) come
with the first request about it, and again whenever the caller cannot know it is cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from sam3_core.concept_prompts import ConceptPrompt
from sam3_core.prompts import PromptSet

# How a request found its image's embedding: cached already, computed for it, or obtained
# from another engine (another replica, when the image changed owner or a helper served it).
CacheOutcome = Literal["hit", "miss", "handoff"]
MaskFormat = Literal["polygon", "rle", "binary"]


@dataclass(frozen=True, kw_only=True)
class ImageRequest:
    """The image a request is about. `image_digest` is the SHA-256 of `image` where the
    caller has computed it already; without `image_id` the digest is the id. A digest
    without `image` asks for that content under the id, if held (else
    `ImageBytesNeededError`: the caller sends the bytes then). `tenant` names
    who sent it (a digest of the API key, never the key; None without keys): tenants never
    see each other's images, whatever the ids."""

    image: bytes | None = None
    image_id: str | None = None
    image_digest: str | None = None
    tenant: str | None = None

    def image_fields(self) -> dict[str, Any]:
        """These fields, to build another request about the same image."""
        return {f.name: getattr(self, f.name) for f in fields(ImageRequest)}


@dataclass(frozen=True, kw_only=True)
class EmbedRequest(ImageRequest):
    """Embed an image and keep its embedding."""


@dataclass(frozen=True, kw_only=True)
class EmbeddingRequest(ImageRequest):
    """The interactive decoder's inputs for an image (embedding it if needed), for a client
    that decodes itself; `encoding` is the wire form (`sam3_core.protocol.embedding`)."""

    encoding: Literal["float16", "int8", "float32"] = "float16"


@dataclass(frozen=True, kw_only=True)
class SegmentRequest(ImageRequest):
    """Masks for points and boxes: one per prompt of `prompts`, in order."""

    prompts: PromptSet = field(default_factory=PromptSet)
    multimask_output: bool = True
    mask_format: MaskFormat = "polygon"
    save_logits_to_cache: bool = False
    load_logits_from_cache: bool = False


@dataclass(frozen=True, kw_only=True)
class ConceptRequest(ImageRequest):
    """Every instance of each concept: one result per prompt of `prompts`, in order. All
    prompts run as separate queries of one pass of sam3's detector."""

    prompts: tuple[ConceptPrompt, ...] = ()
    output_prob_thresh: float = 0.5
    nms_iou_threshold: float | None = None
    mask_format: MaskFormat = "polygon"


@dataclass(frozen=True)
class Decoded:
    """What the decoder gives for a batch of prompts: one entry per prompt, in order.

    Attributes:
        masks: (P, H, W) bool at the original image size.
        scores: (P,) float32, the decoder's predicted IoU of each mask.
        low_res_logits: (P, L, L) float32 (L = 288 at 1008 px), clamped to ±32 as sam3
            does; what `mask_input` takes in a later call.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


@dataclass(frozen=True, kw_only=True)
class ImageResult:
    """What every operation reports about its image.

    Attributes:
        timings: seconds spent per stage of this request in the engine ("embed" when the
            image was embedded for it, "decode", ...).
    """

    image_id: str
    embedding_cache: CacheOutcome
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EmbedResult(ImageResult):
    """The image is cached under `image_id`."""


@dataclass(frozen=True, kw_only=True)
class EmbeddingResult(ImageResult):
    """An image's decoder inputs.

    Attributes:
        arrays: the graph's `image_embed`, `high_res_feats_0`, `high_res_feats_1`, each
            (1, C, H, W) float32 (`sam3_core.onnx_decoder`).
        orig_hw: (H, W) of the image.
        decoder: the decoder's settings and its ONNX file's `etag`, for the client.
    """

    arrays: dict[str, np.ndarray]
    orig_hw: tuple[int, int]
    decoder: dict[str, Any]


@dataclass(frozen=True)
class ServedModel:
    """What the replicas serve (`GET /sam3/model`), so that a client can say it: `weights` is
    "checkpoint" (SAM3's, or weights fine-tuned from it), "demo" (`demo:NAME`, not SAM3) or
    "random"; `concepts` "trained", "untrained" (concept queries find nothing meant) or "off"
    (`SAM3_CONCEPTS=false`); `held_out` a demo model's scores from its training record."""

    weights: Literal["checkpoint", "demo", "random"]
    name: str
    description: str
    architecture: str
    concepts: Literal["trained", "untrained", "off"]
    held_out: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DecoderFile:
    """The served weights' interactive decoder as ONNX; `onnx` is None where the asker
    holds this `etag` already."""

    etag: str
    onnx: bytes | None


@dataclass(frozen=True, kw_only=True)
class Segmentation(ImageResult):
    """The masks of a `SegmentRequest`: `decoded` has one entry per prompt (one when there
    is no prompt).

    Attributes:
        logits_cache: whether earlier logits seeded the decoder; None when the request did
            not ask to load them.
    """

    decoded: Decoded
    logits_cache: CacheOutcome | None = None


@dataclass(frozen=True)
class ConceptInstances:
    """The instances one concept prompt found, in sam3's query order.

    Attributes:
        masks: (N, H, W) bool at the original image size.
        scores: (N,) float32: sigmoid(class logit) x sigmoid(presence logit), as sam3.
        boxes: (N, 4) float32 XYXY in original-image pixels.
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True, kw_only=True)
class ConceptSegmentation(ImageResult):
    """The instances of a `ConceptRequest`, one entry per prompt.

    Attributes:
        text_cache: "hit" when every text embedding came from the cache (the text encoder did
            not run), else "miss".
    """

    prompt_results: list[ConceptInstances]
    text_cache: CacheOutcome = "miss"
