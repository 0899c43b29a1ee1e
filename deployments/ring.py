"""The segmenter replicas' hash ring, as each replica sees it: which replica owns an image.

`Ring` is the ring of Ray Serve's `ConsistentHashRouter` (the same MurmurHash3 with its fixed
seed, the same virtual nodes `"<replica unique_id>:<i>"`), so a replica that knows the replica
set its callers route over computes the same owner for every image as they do.

Replicas learn the replica set the way their callers do, from Ray Serve's own replica-set
updates: the controller's long-poll broadcast of the deployment's running replicas reaches the
request router of every handle to the deployment (`deployments.router.OwnerRouter`), and a
segmenter replica holds a handle to its own deployment, whose router publishes each new set
here (`RINGS`). No service of our own has to track membership, and a replica's view changes
exactly when the routers' do (a ring service would see joins before the routers, and never
hear of a crash).
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the ingress's router imports this module: no torch
    from sam3_core.calls import ImageRequest
    from sam3_core.pictures import ImageKey

from ray.serve.experimental.consistent_hash_router import (
    DEFAULT_NUM_VIRTUAL_NODES,
    _hash_bytes,
)


class Ring:
    """An immutable consistent-hash ring over replica ids (Ray's `ReplicaID.unique_id`)."""

    def __init__(
        self, replicas: Iterable[str], virtual_nodes: int = DEFAULT_NUM_VIRTUAL_NODES
    ) -> None:
        self.replicas = frozenset(replicas)
        self.virtual_nodes = virtual_nodes
        self._hashes, self._owners = _points(self.replicas, virtual_nodes)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Ring)
            and self.replicas == other.replicas
            and self.virtual_nodes == other.virtual_nodes
        )

    def __hash__(self) -> int:
        return hash((self.replicas, self.virtual_nodes))

    def __repr__(self) -> str:
        return f"Ring({sorted(self.replicas)})"

    @cached_property
    def version(self) -> str:
        """A name of this replica set, the same in every process."""
        return ",".join(sorted(self.replicas))

    @classmethod
    def of_version(cls, version: str, virtual_nodes: int = DEFAULT_NUM_VIRTUAL_NODES) -> Ring:
        """The ring `version` names (a peer's, from its manifest)."""
        return cls(version.split(",") if version else (), virtual_nodes)

    def owner(self, key: str) -> str | None:
        """The replica that owns `key` (None on an empty ring)."""
        ranked = self.ranked(key, 1)
        return ranked[0] if ranked else None

    def ranked(self, key: str, count: int | None = None) -> list[str]:
        """The owner of `key`, then the other replicas clockwise from it (distinct), at most
        `count` of them: the order Ray's router falls back in."""
        if not self._hashes:
            return []
        wanted = len(self.replicas) if count is None else min(count, len(self.replicas))
        start = bisect.bisect_right(self._hashes, _hash_bytes(key.encode()))
        ranked: list[str] = []
        for offset in range(len(self._hashes)):
            replica = self._owners[(start + offset) % len(self._hashes)]
            if replica not in ranked:
                ranked.append(replica)
                if len(ranked) == wanted:
                    break
        return ranked

    def without(self, replica: str) -> Ring:
        return Ring(self.replicas - {replica}, self.virtual_nodes)


@functools.lru_cache(maxsize=64)
def _points(replicas: frozenset[str], virtual_nodes: int) -> tuple[list[int], list[str]]:
    """The ring's sorted points and their replicas (cached: a replica rebuilds the rings it
    saw from their versions while it waits for images)."""
    points = sorted(
        (_hash_bytes(f"{replica}:{i}".encode()), replica)
        for replica in replicas
        for i in range(virtual_nodes)
    )
    return [point for point, _ in points], [replica for _, replica in points]


class RingFeed:
    """The latest ring of each deployment, as this process's request routers learn it, and
    the callbacks that want to hear of changes. Thread-safe: routers publish from their own
    event loop's thread; a callback runs in the publishing thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, Ring] = {}
        self._listeners: dict[str, list[Callable[[Ring], None]]] = defaultdict(list)

    def publish(self, deployment: str, ring: Ring) -> None:
        with self._lock:
            if self._latest.get(deployment) == ring:
                return
            self._latest[deployment] = ring
            listeners = list(self._listeners[deployment])
        for listener in listeners:
            listener(ring)

    def subscribe(self, deployment: str, listener: Callable[[Ring], None]) -> None:
        """Call `listener(ring)` on every change of `deployment`'s ring, and at once with the
        ring known already, if any."""
        with self._lock:
            self._listeners[deployment].append(listener)
            latest = self._latest.get(deployment)
        if latest is not None:
            listener(latest)

    def unsubscribe(self, deployment: str, listener: Callable[[Ring], None]) -> None:
        with self._lock:
            if listener in self._listeners[deployment]:
                self._listeners[deployment].remove(listener)


RINGS = RingFeed()


def deployment_name(app_name: str, deployment: str) -> str:
    """How `RINGS` names a deployment."""
    return f"{app_name}#{deployment}"


def ring_key(key: ImageKey) -> str:
    """What the ring hashes for an engine key: the ingress's `owners.owner_key`."""
    tenant, image_id = key
    return f"{tenant}:{image_id}" if tenant else image_id


def request_key(request: ImageRequest) -> ImageKey:
    assert request.image_id is not None, "the ingress resolves the image_id first"
    return (request.tenant or "", request.image_id)
