"""Interactive SAM3 segmentation without Ray or HTTP: embed an image once, then decode
prompts (clicks, boxes) and concept queries (texts, box exemplars) against its kept embedding.

    from sam3_core import EmbedRequest, EngineSettings, PromptSet, Segmenter, SegmentRequest

    segmenter = Segmenter.from_settings(EngineSettings(checkpoint="/models/sam3.pt"))
    image_id = segmenter.embed(EmbedRequest(image=png_bytes)).image_id
    result = segmenter.segment(SegmentRequest(image_id=image_id, prompts=PromptSet(...)))
    result.decoded.masks  # (P, H, W) bool
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Exported lazily (PEP 562): the CPU ingress imports the torch-free parts of this package
# (`sam3_core.protocol`, `sam3_core.calls`), and importing the package must not load torch.
_EXPORTS = {
    "Box": "sam3_core.prompts",
    "ConceptPrompt": "sam3_core.concept_prompts",
    "ConceptRequest": "sam3_core.calls",
    "ConceptSegmentation": "sam3_core.calls",
    "ConceptsDisabledError": "sam3_core.errors",
    "Decoded": "sam3_core.calls",
    "EmbedRequest": "sam3_core.calls",
    "EmbedResult": "sam3_core.calls",
    "EngineSettings": "sam3_core.settings",
    "ImageNotCachedError": "sam3_core.errors",
    "ImageTooLargeError": "sam3_core.errors",
    "InvalidImageError": "sam3_core.errors",
    "InvalidImageIdError": "sam3_core.errors",
    "InvalidPromptError": "sam3_core.errors",
    "Point": "sam3_core.prompts",
    "Prompt": "sam3_core.prompts",
    "PromptSet": "sam3_core.prompts",
    "RequestLimits": "sam3_core.settings",
    "Sam3Error": "sam3_core.errors",
    "SegmentRequest": "sam3_core.calls",
    "Segmentation": "sam3_core.calls",
    "Segmenter": "sam3_core.engine",
    "UrlInputError": "sam3_core.errors",
    "VideoSessions": "sam3_core.video_sessions",
    "VideoSettings": "sam3_core.settings",
    "VideoSource": "sam3_core.video_sessions",
    "SessionNotFoundError": "sam3_core.errors",
    "WeightsError": "sam3_core.errors",
}
__all__ = [
    "Box",
    "ConceptPrompt",
    "ConceptRequest",
    "ConceptSegmentation",
    "ConceptsDisabledError",
    "Decoded",
    "EmbedRequest",
    "EmbedResult",
    "EngineSettings",
    "ImageNotCachedError",
    "ImageTooLargeError",
    "InvalidImageError",
    "InvalidImageIdError",
    "InvalidPromptError",
    "Point",
    "Prompt",
    "PromptSet",
    "RequestLimits",
    "Sam3Error",
    "SegmentRequest",
    "Segmentation",
    "Segmenter",
    "SessionNotFoundError",
    "UrlInputError",
    "VideoSessions",
    "VideoSettings",
    "VideoSource",
    "WeightsError",
]

if TYPE_CHECKING:
    from sam3_core.calls import (
        ConceptRequest,
        ConceptSegmentation,
        Decoded,
        EmbedRequest,
        EmbedResult,
        Segmentation,
        SegmentRequest,
    )
    from sam3_core.concept_prompts import ConceptPrompt
    from sam3_core.engine import Segmenter
    from sam3_core.errors import (
        ConceptsDisabledError,
        ImageNotCachedError,
        ImageTooLargeError,
        InvalidImageError,
        InvalidImageIdError,
        InvalidPromptError,
        Sam3Error,
        SessionNotFoundError,
        UrlInputError,
        WeightsError,
    )
    from sam3_core.prompts import Box, Point, Prompt, PromptSet
    from sam3_core.settings import EngineSettings, RequestLimits, VideoSettings
    from sam3_core.video_sessions import VideoSessions, VideoSource


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sam3_core' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
