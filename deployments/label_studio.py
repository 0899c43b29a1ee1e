"""Label Studio's ML-backend protocol under `/label-studio` (`label_studio_ml/api.py`: `health`,
`setup`, `predict`, `webhook`), so that a project adds `http://HOST:8000/label-studio` as its
model. An adapter over the service's own operations (`SEGMENT`, `CONCEPT_SEGMENT`), reached
through the same owners as the HTTP API; the wire format is `sam3_core.protocol.label_studio`.

- An interactive request (smart keypoints and rectangles drawn so far) is one object's prompt
  through `SEGMENT`, saving and loading the logits cache: each click refines the previous one.
- A request without smart regions (pre-annotation) asks `CONCEPT_SEGMENT` for every
  `BrushLabels` label of the project as a text; one result per instance found.
- Task images: Label Studio's own paths (`/data/upload/...`), fetched from
  `SAM3_LABEL_STUDIO_URL` with `SAM3_LABEL_STUDIO_API_KEY`; http(s) URLs under the URL-input
  settings; `data:` URIs. The service knows Label Studio's paths by content digest after the
  first fetch, so a click sends the digest only and the image is fetched and embedded once.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from pycocotools import mask as coco_mask

from deployments.middleware import tenant_of
from deployments.operations import CONCEPT_SEGMENT, SEGMENT, Operation, Reply
from deployments.owners import Owners
from deployments.request_body import JsonRoute
from deployments.settings import IngressSettings
from sam3_core.calls import ConceptRequest, ImageRequest, SegmentRequest
from sam3_core.concept_prompts import ConceptPrompt, validate_concept_prompts
from sam3_core.errors import ImageNotCachedError, InvalidImageError, UrlInputError
from sam3_core.images import content_id
from sam3_core.prompts import PromptSet, validate_prompt_set
from sam3_core.protocol.image_input import decode_base64
from sam3_core.protocol.label_studio import (
    MODEL_CLASS,
    LabelConfig,
    PredictRequest,
    SetupRequest,
    brush_result,
    interaction,
    parse_label_config,
)
from sam3_core.protocol.url_fetch import UrlPolicy, fetch_image

PREFIX = "/label-studio"
# Followed by what is served (`sam3-serve/sam3.pt`, `sam3-serve/demo:shapes`): Label Studio
# keeps predictions by model version, so that the demo model's are not taken for SAM3's.
MODEL_VERSION = "sam3-serve"
# Label Studio's webhook events a training backend acts on (label_studio_ml/api.py).
TRAIN_EVENTS = frozenset(
    {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING"}
)


class TaskImages:
    """A task's image as bytes, or as the digest it is cached under when Label Studio served
    it before (its upload paths never change content)."""

    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        self.url_policy = settings.url_policy()
        self.label_studio: UrlPolicy | None = None
        self.headers: dict[str, str] = {}
        if settings.label_studio_url:
            host = urlsplit(settings.label_studio_url).hostname or ""
            # The operator named this server: its address may be private (it usually is).
            self.label_studio = UrlPolicy(
                allowed_hosts=(host.lower(),),
                allow_private_networks=True,
                max_bytes=settings.max_image_bytes,
                timeout_seconds=settings.url_timeout_seconds,
                max_redirects=settings.url_max_redirects,
            )
        if settings.label_studio_api_key is not None:
            key = settings.label_studio_api_key.get_secret_value()
            self.headers["Authorization"] = f"Token {key}"
        self._digests: OrderedDict[tuple[str | None, str], str] = OrderedDict()

    def served_by_label_studio(self, reference: str) -> bool:
        base = self.settings.label_studio_url
        return reference.startswith("/") or bool(base and reference.startswith(base))

    def known(self, tenant: str | None, reference: str) -> str | None:
        digest = self._digests.get((tenant, reference))
        if digest is not None:
            self._digests.move_to_end((tenant, reference))
        return digest

    def forget(self, tenant: str | None, reference: str) -> None:
        self._digests.pop((tenant, reference), None)

    def remember(self, tenant: str | None, reference: str, digest: str) -> None:
        if self.served_by_label_studio(reference):
            self._digests[(tenant, reference)] = digest
            while len(self._digests) > self.settings.label_studio_max_images:
                self._digests.popitem(last=False)

    def read(self, reference: str) -> tuple[bytes, str]:
        """The image's bytes and digest (blocking: fetching runs in a worker thread)."""
        max_bytes = self.settings.max_image_bytes
        if reference.startswith("data:"):
            data = decode_base64(reference, max_bytes=max_bytes)
            return data, content_id(data)
        if self.served_by_label_studio(reference):
            if self.label_studio is None or not self.settings.label_studio_url:
                raise UrlInputError(
                    f"the task's image {reference[:80]!r} is on Label Studio: set "
                    "SAM3_LABEL_STUDIO_URL (and SAM3_LABEL_STUDIO_API_KEY) to fetch it"
                )
            url = urljoin(self.settings.label_studio_url, reference)
            data = fetch_image(url, self.label_studio, self.headers)
            return data, content_id(data)
        if reference.startswith(("http://", "https://")):
            if self.url_policy is None:
                raise UrlInputError(
                    "the task's image is a URL and URL images are disabled on this server "
                    "(SAM3_ALLOW_URL_INPUT)"
                )
            data = fetch_image(reference, self.url_policy)
            return data, content_id(data)
        raise InvalidImageError(
            f"the task's image {reference[:80]!r} is not a Label Studio path, an http(s) URL "
            "or a data: URI"
        )


def add_label_studio(app: FastAPI, owners: Owners, settings: IngressSettings) -> None:
    """The `/label-studio` routes on the API's app."""
    images = TaskImages(settings)
    label_studio_tenant = None
    if settings.label_studio_api_key is not None:
        key = settings.label_studio_api_key.get_secret_value().encode()
        label_studio_tenant = hashlib.sha256(b"label-studio:" + key).hexdigest()[:32]

    async def call(
        task: dict[str, Any],
        config: LabelConfig,
        tenant: str | None,
        operation: Operation,
        build: Callable[[ImageRequest], ImageRequest],
    ) -> Reply:
        """`operation` on the task's image: by digest when known, with the bytes when not
        (or no longer) cached on its owner."""
        data = task.get("data")
        reference = data.get(config.image_key) if isinstance(data, dict) else None
        if not isinstance(reference, str) or not reference:
            raise InvalidImageError(f"the task has no image in data.{config.image_key}")
        digest = images.known(tenant, reference)
        if digest is not None:
            try:
                return await owners.call(
                    operation, build(ImageRequest(image_id=digest, tenant=tenant))
                )
            except ImageNotCachedError:
                images.forget(tenant, reference)
        data, digest = await anyio.to_thread.run_sync(images.read, reference)
        images.remember(tenant, reference, digest)
        image = ImageRequest(image=data, image_id=digest, image_digest=digest, tenant=tenant)
        return await owners.call(operation, build(image))

    async def model_version() -> str:
        return f"{MODEL_VERSION}/{(await owners.served_model()).name}"

    async def predict_task(
        task: dict[str, Any], config: LabelConfig, body: PredictRequest, tenant: str | None
    ) -> tuple[list[dict[str, Any]], Reply | None]:
        """The task's brush results, and the reply they came from (none where nothing was
        asked of the service)."""
        regions = body.regions()
        if regions:
            clicked = interaction(regions)
            if clicked is None:
                return [], None
            prompts = PromptSet(prompts=[clicked.prompt])
            validate_prompt_set(
                prompts,
                max_prompts=settings.max_prompts,
                max_points=settings.max_points_per_prompt,
            )

            def segment(image: ImageRequest) -> SegmentRequest:
                return SegmentRequest(
                    **image.image_fields(),
                    prompts=prompts,
                    mask_format="rle",
                    save_logits_to_cache=True,
                    load_logits_from_cache=True,
                )

            reply = await call(task, config, tenant, SEGMENT, segment)
            found = orjson.loads(reply.body)["predictions"]
            labels = [clicked.label] * len(found)
        else:
            if not config.labels:
                return [], None
            concepts = tuple(ConceptPrompt(type="text", text=label) for label in config.labels)
            threshold = settings.label_studio_score_threshold
            validate_concept_prompts(
                list(concepts),
                output_prob_thresh=threshold,
                nms_iou_threshold=None,
                max_prompts=settings.max_concept_prompts,
                max_boxes=settings.max_concept_boxes,
                max_text_length=settings.max_text_length,
            )

            def concept(image: ImageRequest) -> ConceptRequest:
                return ConceptRequest(
                    **image.image_fields(),
                    prompts=concepts,
                    output_prob_thresh=threshold,
                    mask_format="rle",
                )

            reply = await call(task, config, tenant, CONCEPT_SEGMENT, concept)
            found, labels = [], []
            for result in orjson.loads(reply.body)["prompt_results"]:
                found += result["predictions"]
                labels += [config.labels[result["prompt_index"]]] * len(result["predictions"])
        results = await anyio.to_thread.run_sync(_brush_results, found, labels, config)
        return results, reply

    async def predict(body: PredictRequest, http: Request) -> Response:
        config = parse_label_config(body.label_config)
        tenant = tenant_of(http.scope) or label_studio_tenant
        # An interactive request is about its one task; pre-annotation may bring several.
        tasks = body.tasks[:1] if body.regions() else body.tasks
        version = await model_version()
        predictions, last = [], None
        for task in tasks:
            results, reply = await predict_task(task, config, body, tenant)
            predictions.append(_prediction(results, version))
            last = reply or last
        headers = last.response_headers() if last is not None else {}
        return Response(orjson.dumps({"results": predictions}), 200, headers, "application/json")

    async def setup(body: SetupRequest) -> dict[str, str]:
        if body.label_schema:
            parse_label_config(body.label_schema)  # a project sam3-serve cannot serve: 400 now
        return {"model_version": await model_version()}

    async def webhook(http: Request) -> Response:
        # Label Studio trains its backends through these events; SAM3 is not trained here.
        try:
            data = await http.json()
        except ValueError:
            data = None
        event = data.get("action") if isinstance(data, dict) else None
        if event not in TRAIN_EVENTS:
            return Response(
                orjson.dumps({"status": "Unknown event"}), 200, None, "application/json"
            )
        return Response(
            orjson.dumps({"result": None, "status": "ok"}), 201, None, "application/json"
        )

    async def health() -> dict[str, str]:
        return {"status": "UP", "model_class": MODEL_CLASS}

    # Label Studio's protocol, not the service's API: documented in docs/label_studio.md and
    # left out of the OpenAPI document (whose routes are the service's own, fuzzed as such).
    tags = ["Label Studio ML backend"]
    for path in ("/", "/health"):
        app.add_api_route(
            PREFIX + path,
            health,
            methods=["GET"],
            tags=tags,
            include_in_schema=False,
            summary="Label Studio's health check.",
        )
    app.router.add_api_route(
        PREFIX + "/predict",
        predict,
        methods=["POST"],
        tags=tags,
        include_in_schema=False,
        summary="Brush masks for Label Studio: a click's mask, or every instance of the "
        "project's labels.",
        route_class_override=JsonRoute,
    )
    app.router.add_api_route(
        PREFIX + "/setup",
        setup,
        methods=["POST"],
        tags=tags,
        include_in_schema=False,
        route_class_override=JsonRoute,
        summary="Called when a project connects sam3-serve; checks its labelling config.",
    )
    app.router.add_api_route(
        PREFIX + "/webhook",
        webhook,
        methods=["POST"],
        tags=tags,
        include_in_schema=False,
        route_class_override=JsonRoute,
        summary="Label Studio's training events: acknowledged (the model is not trained).",
    )


def _prediction(results: list[dict[str, Any]], model_version: str) -> dict[str, Any]:
    scores = [result["score"] for result in results]
    return {
        "result": results,
        "score": float(np.mean(scores)) if scores else 0.0,
        "model_version": model_version,
    }


def _brush_results(
    predictions: list[dict[str, Any]], labels: list[str | None], config: LabelConfig
) -> list[dict[str, Any]]:
    """The service's COCO RLE predictions as `brushlabels` results (a worker thread's job:
    a big noisy mask takes ~0.5 s to encode)."""
    results = []
    for prediction, label in zip(predictions, labels, strict=True):
        rle = prediction["masks"]
        mask = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        region_id = uuid.uuid4().hex[:10]
        results.append(
            brush_result(mask.astype(bool), prediction["confidence"], label, config, region_id)
        )
    return results
