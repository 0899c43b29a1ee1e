"""Scenarios of load on a healthy service: a burst past the queues, clients that hang up,
and concurrent clients on shared images."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.harness import LocalCluster, Prometheus
from bench.reliability.clients import Outcome, deploy
from bench.samples import click_body, flat_image, image_body, random_image

MISSES = "ray_sam3_embedding_cache_misses_total"


def overload(cluster: LocalCluster, clicks: int = 200) -> dict:
    """A burst of concurrent clicks at 2 replicas with small queues."""
    deploy(
        cluster,
        2,
        args={"segmenter_threads": 1},
        segmenter={"max_ongoing_requests": 2, "max_queued_requests": 4},
    )
    images = {f"ov-{i}": random_image(300 + i) for i in range(4)}
    for image_id, data in images.items():
        cluster.post("/sam3/embed_image", {"image": image_body(data), "image_id": image_id})
    outcome = Outcome()
    ids = sorted(images)

    def click(n: int) -> float:
        started = time.monotonic()
        body = click_body(ids[n % len(ids)], [(5 + n % 80, 7)])
        outcome.record(requests.post(f"{cluster.url}/sam3/visual_segment", json=body, timeout=60))
        return time.monotonic() - started

    with ThreadPoolExecutor(clicks) as pool:
        latencies = list(pool.map(click, range(clicks)))
    after = cluster.post("/sam3/visual_segment", click_body(ids[0], [(1, 1)]))
    rejected = [call for call in outcome.calls if call[1] == 503]
    return {
        "clicks": clicks,
        "by_status": outcome.by_status(),
        "rejected_with_retry_after": sum(1 for call in rejected if call[5] is not None),
        "rejected_codes": dict(Counter(call[4] for call in rejected)),
        "slowest_s": max(latencies),
        "status_right_after": after.status_code,
    }


def cancellation(cluster: LocalCluster, hangups: int = 10, slow: int = 1, **deploy_args) -> dict:
    """Clients that hang up while their embeds wait behind `slow` slow ones (64 MP, over a
    second each), with the replica's options in `deploy_args` (default: serve_config.yaml's,
    where waiting requests sit in the replica's own queue, not the caller's)."""
    deploy(cluster, 1, **deploy_args)
    before = Prometheus.settled(lambda: cluster.metrics.total(MISSES))
    slow_bodies = [{"image": image_body(flat_image(8000, 8000, grey=100 + i))} for i in range(slow)]
    bodies = [{"image": image_body(random_image(500 + i))} for i in range(hangups)]
    slow_threads = [
        threading.Thread(target=cluster.post, args=("/sam3/embed_image", body))
        for body in slow_bodies
    ]
    for thread in slow_threads:
        thread.start()
    time.sleep(0.3)

    def hang_up(body: dict) -> bool:
        try:
            requests.post(f"{cluster.url}/sam3/embed_image", json=body, timeout=0.3)
        except requests.Timeout:
            return True
        return False

    with ThreadPoolExecutor(hangups) as pool:
        hung_up = sum(pool.map(hang_up, bodies))
    for thread in slow_threads:
        thread.join()
    computed = Prometheus.settled(lambda: cluster.metrics.total(MISSES)) - before
    return {"hung_up": hung_up, "slow": slow, "embeddings_computed": computed}


def cancellation_in_the_callers_queue(cluster: LocalCluster, hangups: int = 10) -> dict:
    """Hang-ups queued in the ingress's router: one request in flight per replica."""
    return cancellation(
        cluster,
        hangups,
        args={"segmenter_threads": 1},
        segmenter={"max_ongoing_requests": 1, "max_queued_requests": 64},
    )


def cancellation_in_the_replicas_queue(cluster: LocalCluster, hangups: int = 4) -> dict:
    """Hang-ups queued in the replica itself, behind slow embeds on all of its engine
    threads: serve_config.yaml's options (8 in flight, 4 engine threads)."""
    return cancellation(cluster, hangups, slow=4)


def cross_talk(cluster: LocalCluster, clients: int = 32, images: int = 8, clicks: int = 4) -> dict:
    """Concurrent clients on shared images vs the same request sequences run alone."""
    deploy(cluster, 2)
    pictures = [random_image(700 + i) for i in range(images)]

    def session(client: int, image_id: str) -> list[tuple[int, str, float]]:
        data = pictures[client % images]
        http = requests.Session()
        out = []
        if client % 2 == 0:  # half embed first, half send the image with the first click
            body = {"image": image_body(data), "image_id": image_id}
            out.append((http.post(f"{cluster.url}/sam3/embed_image", json=body).status_code, "", 0))
        points: list[tuple[float, float]] = []
        for click in range(clicks):
            points.append((3 + 11 * client % 120, 2 + 7 * click + client % 5))
            body = click_body(
                image_id,
                points,
                save_logits_to_cache=True,
                load_logits_from_cache=click > 0,
            )
            if click == 0 and client % 2:
                body["image"] = image_body(data)
            response = http.post(f"{cluster.url}/sam3/visual_segment", json=body, timeout=60)
            (prediction,) = response.json()["predictions"] if response.ok else [{}]
            masks = prediction.get("masks", {})
            out.append(
                (response.status_code, masks.get("counts", ""), prediction.get("confidence"))
            )
        return out

    with ThreadPoolExecutor(clients) as pool:
        together = list(pool.map(lambda c: session(c, f"shared-{c % images}"), range(clients)))
    alone = [session(c, f"alone-{c}") for c in range(clients)]
    statuses = Counter(str(s) for run in together + alone for s, _, _ in run)
    differing = sum(1 for a, b in zip(together, alone, strict=True) if a != b)
    return {
        "clients": clients,
        "images": images,
        "requests": sum(len(run) for run in together),
        "by_status": dict(statuses),
        "sequences_differing_from_alone": differing,
    }
