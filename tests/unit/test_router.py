"""The segmenter's request router (`deployments/router.py`): its bounded-load policy, and the
router itself on fake replicas (no cluster): owners by the ring, calls to one replica, helpers
only for a hot owner and only for the methods they may serve."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID

from deployments.ring import RINGS, Ring
from deployments.router import OwnerRouter, bounded_choice, to_replica

DEPLOYMENT = DeploymentID(name="Segmenter", app_name="router-test")


class TestBoundedChoice:
    def test_the_owner_while_under_the_bound(self):
        loads = {"a": 3, "b": 0, "c": 0, "d": 0}
        # bound = max(ceil(1.25 x 4 / 4), 4) = 4
        assert bounded_choice(["a", "b", "c", "d"], loads, 1.25, min_load=4) == "a"

    def test_the_first_replica_clockwise_under_the_bound(self):
        loads = {"a": 8, "b": 5, "c": 1, "d": 0}
        # bound = max(ceil(1.25 x 15 / 4), 2) = 5: "b" is at it, "c" is the helper.
        assert bounded_choice(["a", "b", "c", "d"], loads, 1.25, min_load=2) == "c"

    def test_the_owner_when_everyone_is_over(self):
        loads = {"a": 8, "b": 8}
        assert bounded_choice(["a", "b"], loads, 1.0, min_load=1) == "a"

    def test_a_larger_factor_keeps_more_on_the_owner(self):
        loads = {"a": 6, "b": 1, "c": 1}
        assert bounded_choice(["a", "b", "c"], loads, 1.25, min_load=1) == "b"
        assert bounded_choice(["a", "b", "c"], loads, 3.0, min_load=1) == "a"


@dataclass
class FakeReplica:
    """What the router reads of a `RunningReplica`."""

    replica_id: ReplicaID
    max_ongoing_requests: int = 8
    node_id: str = ""
    availability_zone: str | None = None
    multiplexed_model_ids: set = field(default_factory=set)

    @property
    def unique_id(self) -> str:
        return self.replica_id.unique_id


@dataclass
class Metadata:
    session_id: str
    call_method: str = "segment"
    internal_request_id: str = "r"
    multiplexed_model_id: str = ""


@dataclass
class Context:
    should_backoff: bool = False


@dataclass
class Pending:
    metadata: Metadata
    routing_context: Context = field(default_factory=Context)


def router(load_factor=None) -> tuple[OwnerRouter, list[FakeReplica]]:
    replicas = [FakeReplica(ReplicaID(name, DEPLOYMENT)) for name in ("r-a", "r-b", "r-c", "r-d")]
    instance = OwnerRouter(deployment_id=DEPLOYMENT, handle_source=DeploymentHandleSource.UNKNOWN)
    instance.initialize_state(
        num_virtual_nodes=100, num_fallback_replicas=0, load_factor=load_factor, min_load=2
    )
    instance._replicas = {r.replica_id: r for r in replicas}
    instance._replica_id_set = set(instance._replicas)
    instance._rebuild_ring(frozenset(instance._replica_id_set))
    instance._ring = Ring(r.unique_id for r in replicas)
    return instance, replicas


def choose(instance: OwnerRouter, replicas, session: str, method: str = "segment") -> str:
    pending = Pending(Metadata(session, method))
    (rank, *_) = asyncio.run(instance.choose_replicas(replicas, pending))
    assert pending.routing_context.should_backoff  # else Serve's retry loop spins
    (chosen,) = rank
    return chosen.unique_id


def test_owners_follow_the_ring_and_sessions_can_name_a_replica():
    instance, replicas = router()
    ring = Ring(r.unique_id for r in replicas)
    for i in range(40):
        assert choose(instance, replicas, f"img-{i}") == ring.owner(f"img-{i}")
    assert choose(instance, replicas, to_replica("r-c")) == "r-c"
    pending = Pending(Metadata(to_replica("gone")))
    assert asyncio.run(instance.choose_replicas(replicas, pending)) == [[]]


@pytest.mark.parametrize("method", ["segment", "embed"])
def test_a_hot_owner_gets_a_helper_for_clicks_only(method):
    instance, replicas = router(load_factor=1.25)
    owner, helper, *_ = Ring(r.unique_id for r in replicas).ranked("hot")
    for replica in replicas:
        instance._replica_queue_len_cache.update(replica.replica_id, 0)
    assert choose(instance, replicas, "hot", method) == owner
    instance._replica_queue_len_cache.update(
        next(r for r in replicas if r.unique_id == owner).replica_id, 8
    )
    assert choose(instance, replicas, "hot", method) == (helper if method == "segment" else owner)


def test_the_router_publishes_its_ring():
    instance, replicas = router()
    heard: list[Ring] = []
    RINGS.subscribe("router-test#Segmenter", heard.append)

    async def update() -> None:  # Serve calls it on the router's event loop
        instance.update_replicas(replicas[:3])

    try:
        asyncio.run(update())
    finally:
        RINGS.unsubscribe("router-test#Segmenter", heard.append)
    assert heard[-1] == Ring(["r-a", "r-b", "r-c"])
