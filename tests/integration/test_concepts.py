"""Concept segmentation on a real local Ray cluster over HTTP: an image embedded once on its
owner replica serves clicks and concept queries alike, and Roboflow's `inference-sdk`
`sam3_concept_segment` works unchanged."""

from __future__ import annotations

import pytest
from inference_sdk import InferenceHTTPClient
from pycocotools import mask as coco_mask

from bench.harness import LocalCluster
from tests.conftest import random_pixels
from tests.integration.serving import click_prompt, deploy, image_body, settled_total

pytestmark = pytest.mark.ray

MISSES = "ray_sam3_embedding_cache_misses_total"
CONCEPTS = [
    {"type": "text", "text": "cat"},
    {"type": "visual", "boxes": [{"x": 10, "y": 20, "width": 50, "height": 40}], "box_labels": [1]},
]


@pytest.fixture(scope="module")
def three_replicas(service: LocalCluster) -> LocalCluster:
    deploy(service, replicas=3)
    return service


def test_embed_then_concepts_then_click_by_id_one_trunk_pass_one_replica(three_replicas):
    service = three_replicas
    misses_before = settled_total(service, MISSES)
    calls = [
        service.post("/sam3/embed_image", {"image": image_body(500), "image_id": "concept-1"}),
        service.post(
            "/sam3/concept_segment",
            {"image_id": "concept-1", "prompts": CONCEPTS, "output_prob_thresh": 0.0},
        ),
        service.post("/sam3/visual_segment", {"image_id": "concept-1", **click_prompt((30, 40))}),
        service.post(
            "/sam3/concept_segment", {"image_id": "concept-1", "text": "cat", "format": "rle"}
        ),
    ]
    assert [r.status_code for r in calls] == [200] * 4, [r.text[:200] for r in calls]
    assert len({r.headers["x-sam3-replica"] for r in calls}) == 1
    assert [r.headers["x-sam3-embedding-cache"] for r in calls] == ["miss", "hit", "hit", "hit"]
    assert [r.headers.get("x-sam3-text-cache") for r in calls] == [None, "miss", None, "hit"]
    results = calls[1].json()["prompt_results"]
    assert [r["echo"]["type"] for r in results] == ["text", "visual"]
    assert all(len(r["predictions"]) > 0 for r in results)
    # The replicas' counters: one trunk pass for the four requests.
    assert settled_total(service, MISSES) - misses_before == 1


def test_concepts_first_then_click_resending_the_image(three_replicas):
    service = three_replicas
    body = {"image": image_body(501), "image_id": "concept-2", "text": "dog"}
    first = service.post("/sam3/concept_segment", body)
    click = service.post(
        "/sam3/visual_segment",
        {"image": image_body(501), "image_id": "concept-2", **click_prompt((5, 5))},
    )
    assert first.headers["x-sam3-embedding-cache"] == "miss"
    assert click.headers["x-sam3-embedding-cache"] == "hit"
    assert first.headers["x-sam3-replica"] == click.headers["x-sam3-replica"]
    unknown = service.post("/sam3/concept_segment", {"image_id": "never-sent", "text": "dog"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "image_not_cached"


def test_inference_sdk_concept_segment(three_replicas):
    client = InferenceHTTPClient(api_url=three_replicas.url, api_key="unused-without-auth")
    image = random_pixels(78, 90, 140)
    prompts = [
        {"type": "text", "text": "car"},
        {
            "type": "visual",
            "text": "car",
            "boxes": [
                {"x": 10, "y": 10, "width": 40, "height": 30},
                {"x0": 80, "y0": 20, "x1": 130, "y1": 70},
            ],
            "box_labels": [1, 0],
        },
    ]
    as_polygons = client.sam3_concept_segment(image, prompts=prompts, output_prob_thresh=0.0)
    first, second = as_polygons["prompt_results"]
    assert first["echo"] == {"prompt_index": 0, "type": "text", "text": "car", "num_boxes": 0}
    assert second["echo"]["num_boxes"] == 2 and second["echo"]["type"] == "visual"
    assert all(p["format"] == "polygon" for p in first["predictions"]) and first["predictions"]
    as_rle = client.sam3_concept_segment(
        image, prompts=prompts[:1], output_prob_thresh=0.0, nms_iou_threshold=0.5, format="rle"
    )
    (result,) = as_rle["prompt_results"]
    assert 0 < len(result["predictions"]) <= len(first["predictions"])
    for prediction in result["predictions"]:
        rle = prediction["masks"]
        assert prediction["format"] == "rle" and rle["size"] == [90, 140]
        assert coco_mask.decode({"size": rle["size"], "counts": rle["counts"]}).shape == (90, 140)
        assert 0 <= prediction["confidence"] <= 1
    nothing = client.sam3_concept_segment(image, prompts=prompts[:1], output_prob_thresh=1.0)
    assert nothing["prompt_results"][0]["predictions"] == []
