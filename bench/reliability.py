"""Reliability: overload, hang-ups, concurrency, replica and node failure, a memory soak.

    python -m bench.reliability            # every scenario, full size (~6 min on 2 cores)
    python -m bench.reliability --quick    # the sizes tests/integration/test_faults.py uses

Each scenario deploys serve_config.yaml's application on a local multi-node Ray cluster,
drives it over HTTP through Ray's proxy (127.0.0.1 only; every load loop is bounded in
count and time), and returns its figures; the tests assert on the same figures. Random
weights throughout ("tiny", or "narrow" for the soak, whose embeddings are big enough to
weigh on memory). Writes bench/results/reliability[-quick].json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import ray
import requests
from PIL import Image

from bench.harness import (
    ON_HEAD,
    SEGMENTER_SLOT,
    LocalCluster,
    Prometheus,
    app_config,
    deploy_and_wait,
    image_body,
    random_image,
    start_local_cluster,
    wait_for,
)
from deployments.config import APP_NAME

RESULTS = Path(__file__).parent / "results"
MISSES = "ray_sam3_embedding_cache_misses_total"


# ---------------------------------------------------------------- helpers


def click_body(image_id: str, points: list[tuple[float, float]], **options: Any) -> dict:
    prompts = [{"points": [{"x": x, "y": y, "positive": True} for x, y in points]}]
    return {"image_id": image_id, "prompts": prompts, "format": "rle", **options}


def deploy(cluster: LocalCluster, replicas: int, **overrides: Any) -> set[str]:
    config = app_config(replicas, **overrides)
    probe = image_body(random_image(0))
    return deploy_and_wait(config, {APP_NAME: replicas}, cluster.url, probe)[APP_NAME]


@dataclass
class Outcome:
    """What a load loop saw: (seconds since start, status, replica, cache, code, retry)."""

    started: float = field(default_factory=time.monotonic)
    calls: list[tuple[float, int, str | None, str | None, str | None, str | None]] = field(
        default_factory=list
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: requests.Response) -> None:
        code = None
        if response.status_code != 200 and "json" in response.headers.get("content-type", ""):
            code = response.json().get("code")
        call = (
            time.monotonic() - self.started,
            response.status_code,
            response.headers.get("x-sam3-replica"),
            response.headers.get("x-sam3-embedding-cache"),
            code,
            response.headers.get("retry-after"),
        )
        with self.lock:
            self.calls.append(call)

    def by_status(self) -> dict[str, int]:
        return dict(Counter(str(call[1]) for call in self.calls))


def click_loop(
    url: str,
    images: dict[str, bytes],
    outcome: Outcome,
    stop: threading.Event,
    worker: int,
    max_requests: int,
) -> None:
    """An annotation tool: clicks by id; on 404 resends the image; on 503 honours
    Retry-After. Bounded by `stop` and `max_requests`."""
    session = requests.Session()
    ids = sorted(images)
    for n in range(max_requests):
        if stop.is_set():
            return
        image_id = ids[(worker + n) % len(ids)]
        body = click_body(image_id, [(10 + n % 50, 20 + worker)])
        response = session.post(f"{url}/sam3/visual_segment", json=body, timeout=60)
        outcome.record(response)
        if response.status_code == 404:
            body["image"] = image_body(images[image_id])
            outcome.record(session.post(f"{url}/sam3/visual_segment", json=body, timeout=60))
        elif response.status_code == 503:
            time.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))


def replica_actor(replica_id: str) -> Any:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].endswith(f"#Segmenter#{replica_id}"):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise LookupError(f"no actor for replica {replica_id}")


# ---------------------------------------------------------------- scenarios


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


def cancellation(cluster: LocalCluster, hangups: int = 10) -> dict:
    """Clients that hang up while their embeds are queued behind a slow one."""
    deploy(
        cluster,
        1,
        args={"segmenter_threads": 1},
        segmenter={"max_ongoing_requests": 1, "max_queued_requests": 64},
    )
    before = Prometheus.settled(lambda: cluster.metrics.total(MISSES))
    # A 64 MP picture keeps the one replica busy for over a second (decode and resize).
    buffer = io.BytesIO()
    Image.new("RGB", (8000, 8000), (128, 128, 128)).save(buffer, "PNG")
    slow = buffer.getvalue()
    bodies = [{"image": image_body(random_image(500 + i))} for i in range(hangups)]
    slow_thread = threading.Thread(
        target=cluster.post, args=("/sam3/embed_image", {"image": image_body(slow)})
    )
    slow_thread.start()
    time.sleep(0.3)

    def hang_up(body: dict) -> bool:
        try:
            requests.post(f"{cluster.url}/sam3/embed_image", json=body, timeout=0.3)
        except requests.Timeout:
            return True
        return False

    with ThreadPoolExecutor(hangups) as pool:
        hung_up = sum(pool.map(hang_up, bodies))
    slow_thread.join()
    computed = Prometheus.settled(lambda: cluster.metrics.total(MISSES)) - before
    return {"hung_up": hung_up, "embeddings_computed": computed}


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


def soak(
    cluster: LocalCluster, budget_images: int = 8, factor: int = 5, release_memory: bool = True
) -> dict:
    """Embed `factor` x more distinct images than the cache budget holds (narrow model, whose
    embeddings are 5 MiB), two clicks on each: cache bytes and the replica's memory over time,
    and the service time of embeds and clicks.

    `release_memory=False` turns off what keeps the process at its budget (the engine's
    malloc_trim after embeds, and one malloc arena: glibc's default of 8 per core instead),
    for comparison."""
    per_image = 5_308_416  # narrow: (8*288^2 + 16*144^2 + 64*72^2) * 4 bytes
    budget = budget_images * per_image
    engine = {
        "random_weights": "narrow",
        "max_hole_area": 0,
        "device": "cpu",
        "embedding_cache_bytes": budget,
        "max_embedding_cache_size": 10_000,
        "release_freed_memory": release_memory,
    }
    segmenter = {}
    if not release_memory:
        arenas = str(8 * (os.cpu_count() or 1))
        env = {"env_vars": {"MALLOC_ARENA_MAX": arenas}}
        segmenter = {"ray_actor_options": {"num_cpus": 1, "runtime_env": env}}
    (replica,) = deploy(
        cluster, 1, args={"engine": engine, "segmenter_cpus": 1}, segmenter=segmenter
    )

    def sample() -> tuple[float, float, float, float]:
        samples = {
            name: value
            for name, labels, value in cluster.metrics.samples()
            if labels.get("replica", "").endswith(replica)
        }
        return (
            samples.get("ray_sam3_embedding_cache_bytes", 0.0),
            samples.get("ray_sam3_embedding_cache_budget_bytes", 0.0),
            samples.get("ray_sam3_replica_private_memory_bytes", 0.0),
            samples.get("ray_sam3_replica_rss_bytes", 0.0),
        )

    embed_s, click_s = [], []  # time spent in the service, from the responses

    def serve_image(seed: int) -> None:
        """Embed a new picture, then two clicks on it by image_id."""
        picture = image_body(random_image(seed, 480, 640))
        response = cluster.post("/sam3/embed_image", {"image": picture})
        assert response.status_code == 200, response.text
        embedded = response.json()
        embed_s.append(embedded["time"])
        for click in range(2):
            body = click_body(embedded["image_id"], [(100 + 50 * click, 200)])
            response = cluster.post("/sam3/visual_segment", body)
            assert response.status_code == 200, response.text
            click_s.append(response.json()["time"])

    started = time.monotonic()
    curve = [(0.0, 0, *wait_for(lambda: (s := sample())[2] and s, 30, "replica metrics"))]
    total = budget_images * factor
    for i in range(total):
        serve_image(2000 + i)
        curve.append((time.monotonic() - started, i + 1, *sample()))
    time.sleep(2.5)
    curve.append((time.monotonic() - started, total, *sample()))
    curve = [point for point in curve if point[4]]  # a metrics scrape may miss a report
    # Private memory: RSS less shared pages (the object store the image bytes pass through
    # is Ray's, with its own limit). The replica beside its cache: private memory less the
    # cache's bytes over the first third (model, embed and click working memory). The
    # plateau, over the last third, holds that, the cache (at most the budget) and whatever
    # else crept in. Medians: one embed's or click's working memory comes and goes.
    third = max(len(curve) // 3, 1)
    without_cache = statistics.median(point[4] - point[2] for point in curve[:third])
    private = [point[4] for point in curve]
    plateau = statistics.median(private[-third:])
    return {
        "budget_bytes": budget,
        "images_embedded": total,
        "max_cache_bytes": max(point[2] for point in curve),
        "budget_reported": max(point[3] for point in curve),
        "private_without_cache_bytes": without_cache,
        "private_plateau_bytes": plateau,
        "private_peak_bytes": max(private),
        "rss_peak_bytes": max(point[5] for point in curve),
        # The replica's memory beyond its model and working memory, in cache budgets: the
        # cache's own share is at most 1.0.
        "plateau_over_budget": (plateau - without_cache) / budget,
        "peak_over_budget": (max(private) - without_cache) / budget,
        "embed_median_ms": statistics.median(embed_s) * 1000,
        "click_median_ms": statistics.median(click_s) * 1000,
        "curve": [
            {"t": t, "embedded": n, "cache_bytes": c, "private_bytes": p, "rss_bytes": r}
            for t, n, c, _, p, r in curve
        ],
    }


SCENARIOS = {
    "overload": overload,
    "cancellation": cancellation,
    "cross_talk": cross_talk,
    "replica_failure": replica_failure,
    "node_loss": node_loss,
    "soak": soak,
    "soak_without_release": partial(soak, release_memory=False),
}
QUICK = {
    "overload": {"clicks": 200},
    "cancellation": {"hangups": 8},
    "cross_talk": {"clients": 32, "images": 8, "clicks": 3},
    "replica_failure": {"load_s": 9},
    "node_loss": {"load_s": 12},
    "soak": {"budget_images": 12, "factor": 5},
    "soak_without_release": {"budget_images": 12, "factor": 5},
}
FULL = {
    "overload": {"clicks": 400},
    "cancellation": {"hangups": 20},
    "cross_talk": {"clients": 32, "images": 8, "clicks": 6},
    "replica_failure": {"load_s": 20},
    "node_loss": {"load_s": 30},
    "soak": {"budget_images": 24, "factor": 5},
    "soak_without_release": {"budget_images": 24, "factor": 5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("scenarios", nargs="*", help=f"some of {', '.join(SCENARIOS)} (all)")
    args = parser.parse_args()
    args.scenarios = args.scenarios or list(SCENARIOS)
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios {sorted(unknown)}")
    sizes = QUICK if args.quick else FULL
    cluster = start_local_cluster(workers=2)
    report = {}
    try:
        for name in args.scenarios:
            started = time.monotonic()
            report[name] = SCENARIOS[name](cluster, **sizes[name])
            summary = {k: v for k, v in report[name].items() if k != "curve"}
            print(f"{name} ({time.monotonic() - started:.0f} s): {summary}", flush=True)
    finally:
        cluster.shutdown()
    RESULTS.mkdir(exist_ok=True)
    stem = "reliability-quick" if args.quick else "reliability"
    path = RESULTS / f"{stem}.json"
    # A run of some scenarios updates theirs and keeps the others' figures.
    previous = json.loads(path.read_text()) if path.exists() else {}
    merged = {**previous, **report}
    path.write_text(json.dumps(merged, indent=1))
    if "soak" in merged:
        plot_soak(merged, RESULTS / f"{stem}-soak.png")


def plot_soak(report: dict, path: Path) -> None:
    """Private memory over the soak, with and without releasing freed memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mib = 2**20
    soak = report["soak"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("soak", "released (default)"), ("soak_without_release", "not released")):
        if name in report:
            curve = report[name]["curve"]
            ax.plot(
                [p["embedded"] for p in curve],
                [p["private_bytes"] / mib for p in curve],
                label=f"replica private memory, freed memory {label}",
            )
    floor = soak["private_without_cache_bytes"]
    ax.plot(
        [p["embedded"] for p in soak["curve"]],
        [(floor + p["cache_bytes"]) / mib for p in soak["curve"]],
        color="gray",
        label="model and working memory + cache bytes",
    )
    ax.axhline((floor + 1.1 * soak["budget_bytes"]) / mib, color="red", linestyle=":")
    ax.annotate("budget + 10 %", (0, (floor + 1.1 * soak["budget_bytes"]) / mib), color="red")
    ax.set_xlabel("distinct images embedded")
    ax.set_ylabel("MiB")
    ax.set_title(f"Memory soak: {soak['images_embedded']} images, 5x the cache budget")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
