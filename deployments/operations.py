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

import orjson
from pydantic import BaseModel

from sam3_core.calls import (
    ConceptRequest,
    ConceptSegmentation,
    EmbeddingRequest,
    EmbeddingResult,
    EmbedRequest,
    EmbedResult,
    ImageRequest,
    ImageResult,
    Segmentation,
    SegmentRequest,
)
from sam3_core.concept_prompts import validate_concept_prompts
from sam3_core.prompts import validate_prompt_set
from sam3_core.protocol import embedding as embedding_wire
from sam3_core.protocol.bodies import (
    ConceptSegmentRequest,
    ConceptSegmentResponse,
    EmbedImageRequest,
    EmbedImageResponse,
    ImageEmbeddingRequest,
    ImageInput,
    VisualSegmentRequest,
    VisualSegmentResponse,
)
from sam3_core.protocol.masks import (
    BINARY,
    concept_instances_npz,
    masks_npz,
    predictions_json,
)
from sam3_core.settings import RequestLimits

# The stages of a request, in the order `Server-Timing` lists them: in the ingress "parse"
# (body, image, id) and "owner" (waiting for and in the owner replica); in the replica
# "queue" (waiting for an engine thread), "embed" (when the image was embedded for it),
# a click's "decode", a concept query's "text" (its text encoder), "ground" (detector) and
# "masks" (to full size), "encode" (the reply's masks) and "replica" (all of it there);
# "total".
STAGES = (
    "parse",
    "owner",
    "queue",
    "embed",
    "decode",
    "text",
    "ground",
    "masks",
    "encode",
    "replica",
    "total",
)
REPLICA_HEADER = "x-sam3-replica"
CACHE_HEADER = "x-sam3-embedding-cache"
LOGITS_HEADER = "x-sam3-logits-cache"
# The id the image is cached under: a client that sent the image inline clicks by id next.
IMAGE_ID_HEADER = "x-sam3-image-id"
TEXT_HEADER = "x-sam3-text-cache"


class ImageBody(Protocol):
    """What every operation's JSON body has: the image, its id, or both."""

    image: ImageInput | None
    image_id: str | None


BodyT = TypeVar("BodyT", bound=BaseModel)
RequestT = TypeVar("RequestT", bound=ImageRequest)
ResultT = TypeVar("ResultT", bound=ImageResult)


JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """What an owner replica sends back to the ingress (never an embedding).

    Attributes:
        body: the response body, encoded by the replica (in its worker thread) so that the
            ingress neither unpickles nor re-encodes nested lists; a JSON object still
            without its "time" member, which the ingress adds.
        headers: this operation's own response headers.
        timings: seconds per stage of the request inside the replica.
    """

    image_id: str
    embedding_cache: str
    body: bytes
    replica: str
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def response_headers(self) -> dict[str, str]:
        return {
            REPLICA_HEADER: self.replica,
            CACHE_HEADER: self.embedding_cache,
            IMAGE_ID_HEADER: self.image_id,
            **self.headers,
        }


@dataclass(frozen=True)
class Operation(Generic[BodyT, RequestT, ResultT]):
    """One route of the API.

    Attributes:
        name: the engine's method (`Segmenter.<name>`) and the replica's.
        check: refuses a body the limits do not allow, before its image is read.
        request: the engine request for a body whose image the ingress has read already.
        reply: the reply's body, media type and headers for the engine's result, on the
            replica.
        response: the JSON reply's model; None for a binary reply, documented by
            `media_type` alone.
    """

    name: str
    path: str
    summary: str
    body: type[BodyT]
    response: type[BaseModel] | None
    request: Callable[[BodyT, ImageRequest], RequestT]
    reply: Callable[[RequestT, ResultT], Encoded]
    check: Callable[[BodyT, RequestLimits], None] = lambda body, limits: None
    media_type: str = JSON


def run(
    engine: Any,
    operation: Operation,
    request: ImageRequest,
    replica: str,
    arrived: float | None = None,
) -> Reply:
    """Run `operation` on an engine (`sam3_core.Segmenter`) and encode its reply: what an
    owner replica does, in a worker thread, for a request that reached it at `arrived`
    (`time.perf_counter()`; its wait for the thread is the "queue" stage)."""
    started = time.perf_counter()
    result: ImageResult = getattr(engine, operation.name)(request)
    encoding = time.perf_counter()
    encoded = operation.reply(request, result)
    done = time.perf_counter()
    timings = {**result.timings, "encode": done - encoding}
    if arrived is not None:
        timings["queue"] = started - arrived
        timings["replica"] = done - arrived
    return Reply(
        image_id=result.image_id,
        embedding_cache=result.embedding_cache,
        body=encoded.body,
        replica=replica,
        media_type=encoded.media_type,
        headers=encoded.headers,
        timings=timings,
    )


@dataclass(frozen=True)
class Encoded:
    """An operation's reply body as the replica encoded it (see `Reply`)."""

    body: bytes
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def _embed_reply(_: EmbedRequest, result: EmbedResult) -> Encoded:
    return Encoded(b'{"image_id":' + json.dumps(result.image_id).encode() + b"}")


def _embedding_reply(request: EmbeddingRequest, result: EmbeddingResult) -> Encoded:
    body = embedding_wire.write_embedding(
        result.arrays, result.orig_hw, request.encoding, extra={"decoder": result.decoder}
    )
    return Encoded(body, embedding_wire.MEDIA_TYPE)


def _segment_request(body: VisualSegmentRequest, image: ImageRequest) -> SegmentRequest:
    return SegmentRequest(
        **image.image_fields(),
        prompts=body.prompts,
        multimask_output=body.multimask_output,
        mask_format="polygon" if body.format == "json" else body.format,
        save_logits_to_cache=body.save_logits_to_cache,
        load_logits_from_cache=body.load_logits_from_cache,
    )


def _segment_reply(request: SegmentRequest, result: Segmentation) -> Encoded:
    decoded = result.decoded
    headers = {} if result.logits_cache is None else {LOGITS_HEADER: result.logits_cache}
    if request.mask_format == "binary":
        return Encoded(masks_npz(decoded.masks, decoded.low_res_logits), BINARY, headers)
    predictions = predictions_json(decoded.masks, decoded.scores, request.mask_format)
    return Encoded(b'{"predictions":' + predictions + b"}", JSON, headers)


def _check_prompts(body: VisualSegmentRequest, limits: RequestLimits) -> None:
    validate_prompt_set(
        body.prompts, max_prompts=limits.max_prompts, max_points=limits.max_points_per_prompt
    )


def _concept_request(body: ConceptSegmentRequest, image: ImageRequest) -> ConceptRequest:
    return ConceptRequest(
        **image.image_fields(),
        prompts=tuple(body.prompts or ()),
        output_prob_thresh=body.output_prob_thresh,
        nms_iou_threshold=body.nms_iou_threshold,
        mask_format=body.format if body.format in ("rle", "binary") else "polygon",
    )


def _concept_reply(request: ConceptRequest, result: ConceptSegmentation) -> Encoded:
    headers = {TEXT_HEADER: result.text_cache}
    if request.mask_format == "binary":
        found = result.prompt_results
        body = concept_instances_npz(
            [f.masks for f in found], [f.scores for f in found], [f.boxes for f in found]
        )
        return Encoded(body, BINARY, headers)
    results = b",".join(
        b'{"prompt_index":%d,"echo":%s,"predictions":%s}'
        % (
            i,
            orjson.dumps(
                {
                    "prompt_index": i,
                    "type": prompt.kind,
                    "text": prompt.text,
                    "num_boxes": len(prompt.boxes or ()),
                }
            ),
            predictions_json(found.masks, found.scores, request.mask_format),
        )
        for i, (prompt, found) in enumerate(
            zip(request.prompts, result.prompt_results, strict=True)
        )
    )
    body = b'{"prompt_results":[' + results + b"]}"
    return Encoded(body, JSON, headers)


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
    request=lambda _, image: EmbedRequest(**image.image_fields()),
    reply=_embed_reply,
)
EMBEDDING = Operation(
    name="embedding",
    path="/sam3/embedding",
    summary="The interactive decoder's inputs for an image (embedded if needed), to decode "
    "clicks in the client with /sam3/decoder.onnx; binary, laid out as "
    "sam3_core/protocol/embedding.py describes.",
    body=ImageEmbeddingRequest,
    response=None,
    request=lambda body, image: EmbeddingRequest(**image.image_fields(), encoding=body.encoding),
    reply=_embedding_reply,
    media_type=embedding_wire.MEDIA_TYPE,
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
OPERATIONS: tuple[Operation, ...] = (EMBED, SEGMENT, CONCEPT_SEGMENT, EMBEDDING)
