"""The service on a real local Ray cluster, over real HTTP through Ray's proxy: each image is
owned by one segmenter replica, which embeds it once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from inference_sdk import InferenceHTTPClient
from pycocotools import mask as coco_mask

from bench.harness import LocalCluster
from tests.conftest import random_pixels
from tests.integration.serving import click_prompt, deploy, image_body, settled_total

pytestmark = pytest.mark.ray

IMAGES = 30
CLICKS = 4
MISSES = "ray_sam3_embedding_cache_misses_total"
HITS = "ray_sam3_embedding_cache_hits_total"


@pytest.fixture(scope="module")
def three_replicas(service: LocalCluster) -> LocalCluster:
    deploy(service, replicas=3)
    return service


def annotate(service: LocalCluster, seed: int) -> list[tuple[int, str, str]]:
    """Embed with the first click, then three more clicks: by id, resent, by id."""
    seen = []
    image_id = f"img-{seed}"
    response = service.post("/sam3/embed_image", {"image": image_body(seed), "image_id": image_id})
    seen.append(response)
    for click in range(1, CLICKS):
        body = {"image_id": image_id, "prompts": click_prompt((10 + click, 20 + click))}
        if click == 2:
            body["image"] = image_body(seed)  # as the inference-sdk does: the image every time
        seen.append(service.post("/sam3/visual_segment", body))
    return [
        (r.status_code, r.headers.get("x-sam3-replica"), r.headers.get("x-sam3-embedding-cache"))
        for r in seen
    ]


def test_each_image_is_owned_by_one_replica_and_embedded_once(three_replicas):
    service = three_replicas
    misses_before = settled_total(service, MISSES)
    hits_before = settled_total(service, HITS)
    with ThreadPoolExecutor(6) as pool:
        results = dict(enumerate(pool.map(lambda s: annotate(service, s), range(IMAGES))))

    owners = {}
    for seed, calls in results.items():
        assert [status for status, _, _ in calls] == [200] * CLICKS, calls
        replicas = {replica for _, replica, _ in calls}
        assert len(replicas) == 1, f"image {seed} was served by {replicas}"
        owners[seed] = replicas.pop()
        assert [cache for _, _, cache in calls] == ["miss"] + ["hit"] * (CLICKS - 1)
    assert len(set(owners.values())) == 3, "the images should spread over the three replicas"

    # The replicas' own Prometheus counters say the same as the headers.
    misses = settled_total(service, MISSES) - misses_before
    hits = settled_total(service, HITS) - hits_before
    assert (misses, hits) == (IMAGES, IMAGES * (CLICKS - 1))


def test_inference_sdk_client(three_replicas):
    client = InferenceHTTPClient(api_url=three_replicas.url, api_key="unused-without-auth")
    image = random_pixels(77, 90, 140)
    embedded = client.sam3_embed_image(image)
    assert embedded["image_id"]
    prompts = [
        {"points": [{"x": 20, "y": 30, "positive": True}]},
        {"box": {"x": 70, "y": 45, "width": 40, "height": 30}},
    ]
    as_json = client.sam3_visual_segment(image, prompts=prompts, mask_input_format="json")
    assert len(as_json["predictions"]) == 2
    assert all(p["format"] == "polygon" for p in as_json["predictions"])
    as_rle = client.sam3_visual_segment(image, prompts=prompts, mask_input_format="rle")
    assert len(as_rle["predictions"]) == 2
    for prediction in as_rle["predictions"]:
        rle = prediction["masks"]
        assert rle["size"] == [90, 140]
        assert coco_mask.decode({"size": rle["size"], "counts": rle["counts"]}).shape == (90, 140)
        assert 0 <= prediction["confidence"] <= 1
    single = client.sam3_visual_segment(image, prompts=prompts[:1])
    assert len(single["predictions"]) == 1
