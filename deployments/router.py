"""The segmenter's request router: Ray Serve's `ConsistentHashRouter` (one owner per image),
plus what the replicas need of it.

- **Replica-set updates for the replicas**: every ring change is published to `ring.RINGS`,
  where a segmenter replica (which holds a handle to its own deployment, hence one of these
  routers) learns which images it owns.
- **Calls to one replica**: a session id made by `to_replica(unique_id)` routes to that
  replica, whatever the ring says: hand-offs between replicas go through Serve's handles.
- **Bounded load for hot images** (`load_factor`, off by default): consistent hashing with
  bounded loads (Mirrokni et al., 2018; HAProxy's `hash-balance-factor`). A replica may hold
  at most `ceil(load_factor x (in flight + 1) / replicas)` requests, and never less than
  `min_load` (its engine threads) counts as over; a request of a method in `helped_methods`
  whose owner is over the bound goes to the first replica clockwise from the owner that is
  under it: a helper, which fetches the owner's embedding instead of computing it
  (`deployments.handoff`). Ray's `ConsistentHashRouter` only falls back when the owner
  *rejects* a request (at `max_ongoing_requests`), and then to a replica that embeds the image
  again; Ray's `PrefixCacheAffinityRouter` bounds imbalance but routes by text prefixes.
  Loads are the router's queue-length cache (requests it sent and has not seen complete,
  corrected by Serve's probes), the figure Ray's own routers compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ray.serve._private.request_router.common import PendingRequest
from ray.serve._private.request_router.replica_wrapper import RunningReplica
from ray.serve.experimental.consistent_hash_router import ConsistentHashRouter

# A module, not its names: Serve pickles this module by value into every process that routes
# (`RequestRouterConfig`), and `ring.RINGS` must stay that process's own feed, not a copy.
from deployments import ring

# Session ids naming one replica; "#" never occurs in an image id (`sam3_core.images`).
REPLICA_SESSION_PREFIX = "#replica:"


def to_replica(unique_id: str) -> str:
    """The session id that routes a call to the replica `unique_id`."""
    return REPLICA_SESSION_PREFIX + unique_id


def bounded_choice(
    ranked: Sequence[str], loads: dict[str, int], load_factor: float, min_load: int
) -> str:
    """Consistent hashing with bounded loads: the first of `ranked` (the owner, then the
    replicas clockwise from it) whose load is under the bound, else the owner.

    The bound is `ceil(load_factor x (sum of loads + 1) / len(loads))` (the new request
    included), raised to `min_load`: a replica with fewer requests than that starts the next
    one at once, so sending it elsewhere would only cost a transfer."""
    bound = max(math.ceil(load_factor * (sum(loads.values()) + 1) / len(loads)), min_load)
    for replica in ranked:
        if loads.get(replica, 0) < bound:
            return replica
    return ranked[0]


class OwnerRouter(ConsistentHashRouter):
    """`ConsistentHashRouter` that publishes its ring to the replicas, routes `to_replica`
    sessions to their replica and, with `load_factor`, bounds each replica's load."""

    def initialize_state(
        self,
        load_factor: float | None = None,
        min_load: int = 1,
        helped_methods: Sequence[str] = ("segment",),
        **kwargs: Any,
    ) -> None:
        super().initialize_state(**kwargs)
        if load_factor is not None and load_factor < 1:
            raise ValueError(f"load_factor must be at least 1, got {load_factor!r}")
        self._load_factor = load_factor
        self._min_load = min_load
        self._helped_methods = frozenset(helped_methods)
        self._ring = ring.Ring((), self._num_virtual_nodes)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        current = ring.Ring((r.unique_id for r in self._replica_id_set), self._num_virtual_nodes)
        if current != self._ring:
            self._ring = current
            ring.RINGS.publish(
                ring.deployment_name(self._deployment_id.app_name, self._deployment_id.name),
                current,
            )

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        key = self._routing_key(pending_request)
        if pending_request is None or key is None or not candidate_replicas:
            return await super().choose_replicas(candidate_replicas, pending_request)
        if key.startswith(REPLICA_SESSION_PREFIX):
            pending_request.routing_context.should_backoff = True
            wanted = key[len(REPLICA_SESSION_PREFIX) :]
            # Not (or no longer) a replica: the caller's timeout ends the wait.
            return [[r for r in candidate_replicas if r.replica_id.unique_id == wanted]]
        if (
            self._load_factor is None
            or pending_request.metadata.call_method not in self._helped_methods
        ):
            return await super().choose_replicas(candidate_replicas, pending_request)
        pending_request.routing_context.should_backoff = True
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        loads = await self._loads(candidate_replicas)
        ranked = [replica for replica in self._ring.ranked(key) if replica in by_id]
        if not ranked:
            return await super().choose_replicas(candidate_replicas, pending_request)
        chosen = bounded_choice(ranked, loads, self._load_factor, self._min_load)
        return [[by_id[chosen]]]

    async def _loads(self, replicas: list[RunningReplica]) -> dict[str, int]:
        """Requests in flight per replica: the queue-length cache, probing replicas it has
        no fresh figure for."""
        cache = self._replica_queue_len_cache
        loads: dict[str, int] = {}
        unknown = []
        for replica in replicas:
            queue_len = cache.get(replica.replica_id)
            if queue_len is None:
                unknown.append(replica)
            else:
                loads[replica.replica_id.unique_id] = queue_len
        if unknown:
            for replica, queue_len in await self._probe_queue_lens(unknown, 0):
                # A replica that does not answer in time counts as full.
                loads[replica.replica_id.unique_id] = (
                    replica.max_ongoing_requests if queue_len is None else queue_len
                )
        return loads
