"""The service on a real local Ray cluster, over real HTTP through Ray's proxy: each image is
owned by one segmenter replica, which embeds it once."""

from __future__ import annotations

import base64
import contextlib
import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from inference_sdk import InferenceHTTPClient
from pycocotools import mask as coco_mask

from bench.harness import LocalCluster
from tests.conftest import encode_image, random_pixels
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


def encoded_image(seed: int, height: int, width: int) -> str:
    return base64.b64encode(encode_image(random_pixels(seed, height, width))).decode()


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


def test_the_readme_client_example_runs_and_prints(three_replicas, tmp_path, monkeypatch):
    """README's inference-sdk example, against this service instead of port 8000, with the
    client version README installs (the one the tests install)."""
    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text()
    (install,) = re.findall(r"pip install (inference-sdk==[\d.]+)", readme)
    assert f'"{install}"' in (root / "pyproject.toml").read_text()
    (code,) = re.findall(r"with Roboflow's client.*?```python\n(.+?)```", readme, re.S)
    code = code.replace("http://127.0.0.1:8000", three_replicas.url)
    # The sample scene README's curl fetches from the service (the demo model's, shipped).
    (name,) = set(re.findall(r'"(scene-\d\.png)"', code))
    (tmp_path / name).write_bytes((root / "sam3_core" / "demo" / "samples" / name).read_bytes())
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    assert re.fullmatch(r"\[360, 480\] confidence \d\.\d\d\n\d+ stars\n", printed.getvalue())


def test_resent_images_and_server_timing_through_ray(three_replicas):
    """A click that resends its image goes digest first: held content is a hit without the
    bytes, new content under the same id falls back to sending them and re-embeds."""
    service = three_replicas
    first = {"image": image_body(300), "image_id": "resent", "prompts": click_prompt((5, 5))}
    assert service.post("/sam3/visual_segment", first).headers["x-sam3-embedding-cache"] == "miss"
    same = service.post("/sam3/visual_segment", first)
    assert same.headers["x-sam3-embedding-cache"] == "hit"
    changed = {**first, "image": {"type": "base64", "value": encoded_image(301, 50, 70)}}
    response = service.post("/sam3/visual_segment", {**changed, "format": "rle"})
    assert response.headers["x-sam3-embedding-cache"] == "miss"
    assert response.json()["predictions"][0]["masks"]["size"] == [50, 70]
    stages = dict(item.strip().split(";dur=") for item in same.headers["server-timing"].split(","))
    assert {"parse", "owner", "queue", "decode", "encode", "replica", "total"} <= set(stages)
    assert float(stages["owner"]) >= float(stages["replica"])
    assert same.headers["x-sam3-replica"] == response.headers["x-sam3-replica"]
