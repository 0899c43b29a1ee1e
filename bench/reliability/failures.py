"""Scenarios of failure under load: a segmenter replica killed, a worker node lost, and how
long until the service is whole again."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import ray

from bench.harness import ON_HEAD, SEGMENTER_SLOT, LocalCluster
from bench.reliability.clients import Outcome, click_loop, deploy
from bench.samples import click_body, image_body, random_image


def replica_actor(replica_id: str) -> Any:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].endswith(f"#Segmenter#{replica_id}"):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise LookupError(f"no actor for replica {replica_id}")


def _failure(
    cluster: LocalCluster, inject: Any, replicas: int, load_s: float, **deploy_kw: Any
) -> dict:
    """Bounded click load on `replicas` segmenters; `inject(owner_of)` breaks something at
    a third of the way in and returns what it broke."""
    before_ids = deploy(cluster, replicas, **deploy_kw)
    images = {f"f-{i}": random_image(900 + i) for i in range(12)}
    owner = {}
    for image_id, data in images.items():
        response = cluster.post(
            "/sam3/embed_image", {"image": image_body(data), "image_id": image_id}
        )
        owner[image_id] = response.headers["x-sam3-replica"]
    outcome = Outcome()
    stop = threading.Event()
    workers = [
        threading.Thread(target=click_loop, args=(cluster.url, images, outcome, stop, w, 10_000))
        for w in range(6)
    ]
    for worker in workers:
        worker.start()
    time.sleep(load_s / 3)
    broken_at = time.monotonic() - outcome.started
    broken = inject(owner)

    def replacement_answered() -> float | None:
        new = [call[0] for call in outcome.calls if call[2] and call[2] not in before_ids]
        return min(new, default=None)

    deadline = time.monotonic() + 300
    while time.monotonic() - outcome.started < load_s or replacement_answered() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    replaced_at = replacement_answered()
    stop.set()
    for worker in workers:
        worker.join()
    failed = [call for call in outcome.calls if call[1] != 200 and call[0] >= broken_at]
    last_failure = max((call[0] for call in failed), default=broken_at)
    # Full service: the replacement is RUNNING and every image answers (resent if needed).
    final = {}
    for image_id, data in images.items():
        response = cluster.post(
            "/sam3/visual_segment",
            click_body(image_id, [(1, 1)]) | {"image": image_body(data)},
        )
        final[image_id] = (response.status_code, response.headers.get("x-sam3-replica"))
    after_ids = {replica for _, replica in final.values()}
    return {
        "broken": broken,
        "requests": len(outcome.calls),
        "by_status": outcome.by_status(),
        "failed_codes": dict(Counter(f"{call[1]} {call[4]}" for call in failed)),
        "unavailable_with_retry_after": sum(1 for c in failed if c[1] == 503 and c[5]),
        "broken_at_s": broken_at,
        "replacement_answering_after_s": None if replaced_at is None else replaced_at - broken_at,
        "last_failure_after_s": last_failure - broken_at,
        "full_service_after_s": max(replaced_at or load_s, last_failure) - broken_at,
        "images_served_at_end": sum(1 for status, _ in final.values() if status == 200),
        "images": len(images),
        "replicas_before": sorted(before_ids),
        "replicas_after": sorted(after_ids),
        "moved_images": sum(1 for i in images if final[i][1] != owner[i]),
    }


def replica_failure(cluster: LocalCluster, load_s: float = 15) -> dict:
    """Kill one segmenter replica's actor under load."""

    def kill(owner: dict[str, str]) -> str:
        victim = Counter(owner.values()).most_common(1)[0][0]
        ray.kill(replica_actor(victim), no_restart=True)
        return f"replica {victim}"

    return _failure(cluster, kill, replicas=2, load_s=load_s)


def node_loss(cluster: LocalCluster, load_s: float = 25) -> dict:
    """Remove a worker node holding a segmenter replica under load (the ingress stays on the
    head), then add a fresh node, as a node autoscaler would, for the replacement."""
    pinned = {"ray_actor_options": {"num_cpus": 0.25, "resources": {SEGMENTER_SLOT: 1}}}
    on_head = {"ray_actor_options": {"num_cpus": 0.25, "resources": ON_HEAD}}

    def remove(owner: dict[str, str]) -> str:
        node = next(iter(cluster.worker_ports))
        cluster.remove_worker(node)
        cluster.add_worker()
        return "a worker node and its segmenter replica"

    return _failure(cluster, remove, replicas=2, load_s=load_s, segmenter=pinned, ingress=on_head)
