"""Segmenter replicas on two different nodes of a `ray.cluster_utils.Cluster`: affinity by
`image_id` holds across nodes (the ingress on the head routes to the owner's node)."""

from __future__ import annotations

import pytest
import ray

from bench.harness import LocalCluster
from tests.integration.serving import click_prompt, deploy, image_body

pytestmark = pytest.mark.ray


def test_affinity_across_nodes(service: LocalCluster):
    # Each worker node has one segmenter_slot: two replicas needing one each sit on two nodes.
    deploy(
        service,
        replicas=2,
        segmenter={"ray_actor_options": {"num_cpus": 0.25, "resources": {"segmenter_slot": 1}}},
    )
    assert ray.available_resources().get("segmenter_slot", 0) == 0
    assert ray.cluster_resources()["segmenter_slot"] == 2

    owners: dict[int, set[str]] = {}
    caches: list[str] = []
    for seed in range(200, 216):
        image_id = f"mn-{seed}"
        responses = [
            service.post("/sam3/embed_image", {"image": image_body(seed), "image_id": image_id})
        ]
        for click in range(3):
            body = {"image_id": image_id, "prompts": click_prompt((click, 2 * click))}
            responses.append(service.post("/sam3/visual_segment", body))
        assert all(r.status_code == 200 for r in responses)
        owners[seed] = {r.headers["x-sam3-replica"] for r in responses}
        caches += [r.headers["x-sam3-embedding-cache"] for r in responses]
    assert all(len(replicas) == 1 for replicas in owners.values()), owners
    assert len(set().union(*owners.values())) == 2, "both nodes' replicas own images"
    assert caches.count("miss") == len(owners)
