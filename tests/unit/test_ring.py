"""The replicas' view of the ring (`deployments/ring.py`) is the ring Ray's
`ConsistentHashRouter` routes by: the same owner, and the same fallback order, for every key."""

from __future__ import annotations

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID
from ray.serve.experimental.consistent_hash_router import ConsistentHashRouter

from deployments.ring import Ring, RingFeed

DEPLOYMENT = DeploymentID(name="Segmenter", app_name="sam3")
KEYS = [f"img-{i}" for i in range(300)] + [f"{'ab' * 32}:photo-{i}" for i in range(100)]


def rays_ranking(replicas: list[str], virtual_nodes: int) -> dict[str, list[str]]:
    """Every key's owner and fallbacks, as Ray's router ranks them."""
    router = ConsistentHashRouter(
        deployment_id=DEPLOYMENT, handle_source=DeploymentHandleSource.UNKNOWN
    )
    router.initialize_state(
        num_virtual_nodes=virtual_nodes, num_fallback_replicas=len(replicas) - 1
    )
    router._rebuild_ring(frozenset(ReplicaID(r, DEPLOYMENT) for r in replicas))
    return {k: [r.unique_id for r in router._lookup_ranked_replicas(k)] for k in KEYS}


@pytest.mark.parametrize("virtual_nodes", [100, 7])
@pytest.mark.parametrize(
    "replicas", [["a1b2c3"], ["x9", "y8"], ["qz7k2m1d", "w3e4r5t6", "p0o9i8u7"]]
)
def test_the_same_ring_as_rays_router(replicas, virtual_nodes):
    ring = Ring(replicas, virtual_nodes)
    ranking = rays_ranking(replicas, virtual_nodes)
    for key in KEYS:
        assert ring.ranked(key) == ranking[key], key
        assert ring.owner(key) == ranking[key][0]


def test_adding_a_replica_moves_keys_only_to_it():
    before = Ring(["a", "b", "c"])
    after = Ring(["a", "b", "c", "d"])
    moved = [k for k in KEYS if before.owner(k) != after.owner(k)]
    assert moved and all(after.owner(k) == "d" for k in moved)
    # The owner a key had before "d" joined is its owner on the ring without "d".
    assert all(after.without("d").owner(k) == before.owner(k) for k in KEYS)


def test_empty_ring_and_identity():
    assert Ring([]).owner("x") is None and Ring([]).ranked("x") == []
    assert Ring(["b", "a"]) == Ring(["a", "b"]) and Ring(["a"]) != Ring(["a"], 5)
    assert Ring(["b", "a"]).version == "a,b"


def test_the_feed_tells_listeners_of_changes_only():
    feed = RingFeed()
    heard: list[Ring] = []
    feed.publish("app#Segmenter", Ring(["a"]))
    feed.subscribe("app#Segmenter", heard.append)  # hears the latest at once
    feed.publish("app#Segmenter", Ring(["a"]))
    feed.publish("app#Segmenter", Ring(["a", "b"]))
    feed.publish("other#Segmenter", Ring(["c"]))
    assert heard == [Ring(["a"]), Ring(["a", "b"])]
    feed.unsubscribe("app#Segmenter", heard.append)
    feed.publish("app#Segmenter", Ring(["b"]))
    assert len(heard) == 2
