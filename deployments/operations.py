"""Every operation of the API, declared once: its route, JSON body, the engine request built
from the body, and the reply the image's owner replica encodes from the engine's result.

The HTTP routes (`api.py`), the segmenter replica's methods (`segmenter.py`) and the
in-process owner (`owners.LocalOwners`) are all derived from `OPERATIONS`: a new operation
is one entry here, its engine method (`Segmenter.<name>`), and tests. No torch here: the
ingress imports this module; only the replicas run the engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from sam3_core.calls import (
    ConceptRequest,
    ConceptSegmentation,
    EmbedRequest,
    EmbedResult,
    ImageRequest,
    ImageResult,
    Segmentation,
    SegmentRequest,
)
from sam3_core.concept_prompts import validate_concept_prompts
from sam3_core.prompts import validate_prompt_set
from sam3_core.protocol.bodies import (
    ConceptSegmentRequest,
    ConceptSegmentResponse,
    EmbedImageRequest,
    EmbedImageResponse,
    ImageInput,
    PromptEcho,
    PromptResult,
    VisualSegmentRequest,
    VisualSegmentResponse,
    predictions_json,
    prompt_results_json,
)
from sam3_core.protocol.masks import encode_predictions
from sam3_core.settings import RequestLimits

REPLICA_HEADER = "x-sam3-replica"
CACHE_HEADER = "x-sam3-embedding-cache"
LOGITS_HEADER = "x-sam3-logits-cache"
TEXT_HEADER = "x-sam3-text-cache"


class ImageBody(Protocol):
    """What every operation's JSON body has: the image, its id, or both."""

    image: ImageInput | None
    image_id: str | None


BodyT = TypeVar("BodyT", bound=BaseModel)
RequestT = TypeVar("RequestT", bound=ImageRequest)
ResultT = TypeVar("ResultT", bound=ImageResult)


@dataclass(frozen=True)
class Reply:
    """What an owner replica sends back to the ingress (never an embedding).

    Attributes:
        members: the JSON response's members but "time", encoded by the replica (in its
            worker thread), e.g. `b'"predictions":[...]'`: the ingress neither unpickles nor
            re-encodes nested lists.
        headers: this operation's own response headers.
        timings: seconds per stage of the request inside the replica.
    """

    image_id: str
    embedding_cache: str
    members: bytes
    replica: str
    headers: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def response_headers(self) -> dict[str, str]:
        return {REPLICA_HEADER: self.replica, CACHE_HEADER: self.embedding_cache, **self.headers}


@dataclass(frozen=True)
class Operation(Generic[BodyT, RequestT, ResultT]):
    """One route of the API.

    Attributes:
        name: the engine's method (`Segmenter.<name>`) and the replica's.
        check: refuses a body the limits do not allow, before its image is read.
        request: the engine request for a body whose image the ingress has read already.
        reply: the reply's JSON members and headers for the engine's result, on the replica.
    """

    name: str
    path: str
    summary: str
    body: type[BodyT]
    response: type[BaseModel]
    request: Callable[[BodyT, ImageRequest], RequestT]
    reply: Callable[[RequestT, ResultT], tuple[bytes, dict[str, str]]]
    check: Callable[[BodyT, RequestLimits], None] = lambda body, limits: None


def run(engine: Any, operation: Operation, request: ImageRequest, replica: str) -> Reply:
    """Run `operation` on an engine (`sam3_core.Segmenter`) and encode its reply: what an
    owner replica does, in a worker thread."""
    result: ImageResult = getattr(engine, operation.name)(request)
    started = time.perf_counter()
    members, headers = operation.reply(request, result)
    return Reply(
        image_id=result.image_id,
        embedding_cache=result.embedding_cache,
        members=members,
        replica=replica,
        headers=headers,
        timings={**result.timings, "encode": time.perf_counter() - started},
    )


def _embed_reply(_: EmbedRequest, result: EmbedResult) -> tuple[bytes, dict[str, str]]:
    return b'"image_id":' + json.dumps(result.image_id).encode(), {}


def _segment_request(body: VisualSegmentRequest, image: ImageRequest) -> SegmentRequest:
    return SegmentRequest(
        image=image.image,
        image_id=image.image_id,
        image_digest=image.image_digest,
        prompts=body.prompts,
        multimask_output=body.multimask_output,
        mask_format="rle" if body.format == "rle" else "polygon",
        save_logits_to_cache=body.save_logits_to_cache,
        load_logits_from_cache=body.load_logits_from_cache,
    )


def _segment_reply(request: SegmentRequest, result: Segmentation) -> tuple[bytes, dict[str, str]]:
    decoded = result.decoded
    predictions = encode_predictions(decoded.masks, decoded.scores, request.mask_format)
    headers = {} if result.logits_cache is None else {LOGITS_HEADER: result.logits_cache}
    return b'"predictions":' + predictions_json(predictions), headers


def _check_prompts(body: VisualSegmentRequest, limits: RequestLimits) -> None:
    validate_prompt_set(
        body.prompts, max_prompts=limits.max_prompts, max_points=limits.max_points_per_prompt
    )


def _concept_request(body: ConceptSegmentRequest, image: ImageRequest) -> ConceptRequest:
    return ConceptRequest(
        image=image.image,
        image_id=image.image_id,
        image_digest=image.image_digest,
        prompts=tuple(body.prompts or ()),
        output_prob_thresh=body.output_prob_thresh,
        nms_iou_threshold=body.nms_iou_threshold,
        mask_format="rle" if body.format == "rle" else "polygon",
    )


def _concept_reply(
    request: ConceptRequest, result: ConceptSegmentation
) -> tuple[bytes, dict[str, str]]:
    results = [
        PromptResult(
            prompt_index=i,
            echo=PromptEcho(
                prompt_index=i,
                type=prompt.kind,
                text=prompt.text,
                num_boxes=len(prompt.boxes or ()),
            ),
            predictions=encode_predictions(found.masks, found.scores, request.mask_format),
        )
        for i, (prompt, found) in enumerate(
            zip(request.prompts, result.prompt_results, strict=True)
        )
    ]
    return b'"prompt_results":' + prompt_results_json(results), {TEXT_HEADER: result.text_cache}


def _check_concepts(body: ConceptSegmentRequest, limits: RequestLimits) -> None:
    validate_concept_prompts(
        body.prompts or [],
        output_prob_thresh=body.output_prob_thresh,
        nms_iou_threshold=body.nms_iou_threshold,
        max_prompts=limits.max_concept_prompts,
        max_boxes=limits.max_concept_boxes,
        max_text_length=limits.max_text_length,
    )


EMBED = Operation(
    name="embed",
    path="/sam3/embed_image",
    summary="Embed an image and keep its embedding for later clicks.",
    body=EmbedImageRequest,
    response=EmbedImageResponse,
    request=lambda _, image: EmbedRequest(
        image=image.image, image_id=image.image_id, image_digest=image.image_digest
    ),
    reply=_embed_reply,
)
SEGMENT = Operation(
    name="segment",
    path="/sam3/visual_segment",
    summary="Masks for points and boxes: one prediction per prompt, in order.",
    body=VisualSegmentRequest,
    response=VisualSegmentResponse,
    request=_segment_request,
    reply=_segment_reply,
    check=_check_prompts,
)
CONCEPT_SEGMENT = Operation(
    name="concept_segment",
    path="/sam3/concept_segment",
    summary="Every instance of each concept (text, box exemplars, or both): one result per "
    "prompt, all prompts in one pass on the image's cached embedding.",
    body=ConceptSegmentRequest,
    response=ConceptSegmentResponse,
    request=_concept_request,
    reply=_concept_reply,
    check=_check_concepts,
)
OPERATIONS: tuple[Operation, ...] = (EMBED, SEGMENT, CONCEPT_SEGMENT)
