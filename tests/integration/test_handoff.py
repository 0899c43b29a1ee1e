"""Scale events on the session's Ray cluster, over HTTP, with replica counts changed as
`serve deploy` changes them (running replicas keep their caches): images move to their new
owners without being embedded again, a click by id is never answered from a picture other than
the latest sent under that id, and a replica killed around its hand-off costs at most a 404.

Tiny random-weights model: masks are meaningless but deterministic, so two answers are the
same picture's exactly when their masks are equal."""

from __future__ import annotations

import contextlib
import threading

import pytest
import ray
import requests
from ray import serve

from bench.harness import LocalCluster, wait_for
from bench.reliability.failures import replica_actor
from deployments.ring import RINGS, Ring, deployment_name
from tests.integration.serving import click_prompt, deploy, image_body, settled_total

pytestmark = pytest.mark.ray

IMAGES = 24
HANDOFFS = "ray_sam3_embedding_cache_handoffs_total"


def by_id(service: LocalCluster, image_id: str) -> requests.Response:
    body = {"image_id": image_id, "prompts": click_prompt((11, 7)), "format": "rle"}
    return service.post("/sam3/visual_segment", body)


def with_image(service: LocalCluster, image_id: str, seed: int) -> requests.Response:
    body = {
        "image_id": image_id,
        "image": image_body(seed),
        "prompts": click_prompt((11, 7)),
        "format": "rle",
    }
    return service.post("/sam3/visual_segment", body)


def embed(service: LocalCluster, image_id: str, seed: int) -> str:
    response = service.post("/sam3/embed_image", {"image": image_body(seed), "image_id": image_id})
    assert response.status_code == 200, response.text
    return response.headers["x-sam3-replica"]


def masks(response: requests.Response) -> list:
    assert response.status_code == 200, response.text
    return [p["masks"] for p in response.json()["predictions"]]


def test_after_a_scale_out_and_a_scale_in_clicks_by_id_get_the_latest_picture(
    service: LocalCluster,
):
    """The issue's scenario: 24 images on 2 replicas, a third added, the ids that moved to
    it re-sent with new pictures, then back to 2 replicas. Before replicas knew their ring,
    10 of 24 by-id clicks got 404 after the scale-out, and ids that returned to their first
    owner were answered from the old picture after the scale-in."""
    old_seed, new_seed = 300, 301
    deploy(service, replicas=2)
    ids = [f"stale-{i}" for i in range(IMAGES)]
    first_owner = {image_id: embed(service, image_id, old_seed) for image_id in ids}
    old_masks = masks(with_image(service, "probe-old", old_seed))
    new_masks = masks(with_image(service, "probe-new", new_seed))
    assert old_masks != new_masks, "the two pictures must give different masks"
    handoffs_before = settled_total(service, HANDOFFS)

    deploy(service, replicas=3)
    after_out = {image_id: by_id(service, image_id) for image_id in ids}
    not_found = [i for i, r in after_out.items() if r.status_code == 404]
    for image_id in not_found:  # what the annotation tool does with a 404
        after_out[image_id] = with_image(service, image_id, old_seed)
    moved = [i for i in ids if after_out[i].headers["x-sam3-replica"] != first_owner[i]]
    assert moved, "the added replica owns some of the images"
    for image_id in moved:
        assert masks(after_out[image_id]) == old_masks
    for image_id in moved:  # the tool re-sends these ids with new pictures
        response = with_image(service, image_id, new_seed)
        assert response.headers["x-sam3-embedding-cache"] == "miss"

    deploy(service, replicas=2)
    after_in = {image_id: by_id(service, image_id) for image_id in ids}
    for image_id, response in after_in.items():
        if response.status_code == 200:
            want = new_masks if image_id in moved else old_masks
            assert masks(response) == want, f"{image_id} answered from another picture"
    not_found += [i for i, r in after_in.items() if r.status_code == 404]
    assert not_found == [], "by-id clicks got 404 after the scale events"
    assert [after_out[i].headers["x-sam3-embedding-cache"] for i in moved] == ["handoff"] * len(
        moved
    )
    # The replicas counted the same hand-offs: after the scale-out, and after the scale-in
    # for the images of the replica that left.
    moved_back = sum(
        1 for r in after_in.values() if r.headers["x-sam3-embedding-cache"] == "handoff"
    )
    assert settled_total(service, HANDOFFS) - handoffs_before == len(moved) + moved_back


def test_a_scale_in_hands_the_removed_replicas_images_to_their_new_owners(
    service: LocalCluster,
):
    deploy(service, replicas=3)
    ids = [f"in-{i}" for i in range(18)]
    owner = {image_id: embed(service, image_id, 100 + i) for i, image_id in enumerate(ids)}
    expected = {image_id: masks(by_id(service, image_id)) for image_id in ids}
    assert len(set(owner.values())) == 3
    handoffs_before = settled_total(service, HANDOFFS)

    survivors = deploy(service, replicas=2)
    moved = [i for i in ids if owner[i] not in survivors]
    assert moved, "the removed replica owned some images"
    for image_id in ids:
        response = by_id(service, image_id)
        assert response.status_code == 200, response.text
        cache = response.headers["x-sam3-embedding-cache"]
        assert cache == ("handoff" if image_id in moved else "hit"), image_id
        if image_id not in moved:
            assert response.headers["x-sam3-replica"] == owner[image_id]
        assert masks(response) == expected[image_id]
    assert settled_total(service, HANDOFFS) - handoffs_before == len(moved)


def test_a_replica_killed_around_its_hand_off_costs_at_most_a_404(service: LocalCluster):
    """Scale 3 -> 2 and kill the replica Serve stops as soon as it is stopping: each of its
    images is handed off or lost; clients see the right masks or a 404, never a 5xx, never
    another picture's masks, and get the right masks once they re-send the image."""
    deploy(service, replicas=3)
    ids = [f"kill-{i}" for i in range(30)]
    owner = {image_id: embed(service, image_id, 500 + i) for i, image_id in enumerate(ids)}
    expected = {image_id: masks(by_id(service, image_id)) for image_id in ids}
    before = set(owner.values())

    # This process's own router (OwnerRouter) hears the replica set Serve routes over.
    rings: list[Ring] = []
    RINGS.subscribe(deployment_name("sam3", "Segmenter"), rings.append)
    with contextlib.suppress(RuntimeError):  # this process's router may run already
        serve.get_deployment_handle("Segmenter", "sam3")._init()
    killed: list[str] = []

    def kill_the_stopping_replica() -> None:
        def stopping() -> str | None:
            gone = before - rings[-1].replicas if rings else set()
            return next(iter(gone), None)

        victim = wait_for(stopping, 300, "a replica to stop", every=0.02)
        try:
            ray.kill(replica_actor(victim), no_restart=True)
            killed.append(victim)
        except LookupError:
            pass  # it had exited already

    killer = threading.Thread(target=kill_the_stopping_replica)
    killer.start()
    survivors = deploy(service, replicas=2)
    killer.join()
    assert killed, "no replica was killed (it exited first, or none was seen stopping)"
    outcomes = {}
    for image_id in ids:
        response = by_id(service, image_id)
        assert response.status_code in (200, 404), (image_id, response.status_code, response.text)
        if response.status_code == 200:
            assert masks(response) == expected[image_id], image_id
        else:
            assert response.json()["code"] == "image_not_cached"
            resent = with_image(service, image_id, 500 + ids.index(image_id))
            assert masks(resent) == expected[image_id]
            assert resent.headers["x-sam3-replica"] in survivors
        outcomes[image_id] = response.status_code
    lost = [i for i in ids if outcomes[i] == 404]
    assert all(owner[i] not in survivors for i in lost), "only the stopped replica's images"
    RINGS.unsubscribe(deployment_name("sam3", "Segmenter"), rings.append)
    print(f"killed {killed}: {len(lost)} image(s) lost, the others handed off or kept")
