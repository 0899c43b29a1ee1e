"""The memory soak: many more distinct images than the cache budget holds, the replica's
memory over time, and its plot."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from bench.harness import LocalCluster, wait_for
from bench.reliability.clients import deploy
from bench.samples import click_body, image_body, random_image


def soak(
    cluster: LocalCluster, budget_images: int = 8, factor: int = 5, release_memory: bool = True
) -> dict:
    """Embed `factor` x more distinct images than the cache budget holds (narrow model, as
    served: 6.3 MiB cached per image), two clicks on each: cache bytes and the replica's memory
    over time, and the service time of embeds and clicks.

    `release_memory=False` turns off what keeps the process at its budget (the engine's
    malloc_trim after embeds, and one malloc arena: glibc's default of 8 per core instead),
    for comparison."""
    # narrow, concepts on: SAM2 neck (8*288^2 + 16*144^2 + 64*72^2) + trunk (64*72^2), float32
    per_image = 6_635_520
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
    # is Ray's, with its own limit), read by the replica with its cache's bytes after each
    # request. The replica beside its cache: private memory less the cache's bytes over the
    # first third (model, embed and click working memory). The plateau, over the last third,
    # holds that, the cache (at most the budget) and whatever else crept in. Medians: one
    # embed's or click's working memory comes and goes.
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
