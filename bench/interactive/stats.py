"""What the recorded requests of a run say: latency percentiles, a run's summary (and its
printed row), and which images changed owner replica and were embedded again."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from bench.interactive.workload import Event, Recorder, Workload


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "n": 0}
    ms = np.array(values) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "n": len(values),
    }


def summarise(
    router: str,
    replicas: int,
    workload: Workload,
    recorder: Recorder,
    server: dict[str, float] | None,
    peak_bytes: dict[str, float],
) -> dict:
    events = recorder.events
    ok = [e for e in events if e.status == 200]
    embeds_computed = sum(1 for e in ok if e.embedding_cache == "miss")
    hits = sum(1 for e in ok if e.embedding_cache == "hit")
    logits = [e.logits_cache for e in ok if e.logits_cache]
    unique = len({e.image for e in events})
    duration = max(e.t + e.latency_s for e in events)
    return {
        "router": router,
        "replicas": replicas,
        "annotators": workload.annotators,
        "clicks_per_image": workload.clicks,
        "unique_images": unique,
        "requests": len(events),
        "embeddings_computed": embeds_computed,
        # From the replicas' own counters (misses, less the 404s that are misses too).
        "embeddings_computed_server": (
            None if server is None else server["misses"] - server["not_cached"]
        ),
        "embeddings_per_unique_image": embeds_computed / unique,
        "embedding_cache_hit_rate": hits / max(1, hits + embeds_computed),
        "logits_cache_hit_rate": logits.count("hit") / max(1, len(logits)),
        "latency": {
            "click": percentiles([e.latency_s for e in ok if e.kind == "click"]),
            "embed": percentiles([e.latency_s for e in ok if e.kind == "embed"]),
        },
        "throughput_rps": len(events) / duration,
        "duration_s": duration,
        "errors_by_status": dict(Counter(str(e.status) for e in events if e.status != 200)),
        "peak_cache_bytes_per_replica": peak_bytes,
        "images_embedded_beyond_owner_changes": embedded_beyond_owner_changes(ok),
    }


def summary_row(r: dict) -> str:
    """One line of `summarise`'s figures, as the benchmark prints them."""
    click, embed = r["latency"]["click"], r["latency"]["embed"]
    return (
        f"R={r['replicas']} {r['router']:<16} embeds {r['embeddings_computed']:>4} "
        f"({r['embeddings_per_unique_image']:.2f}/image) hit {r['embedding_cache_hit_rate']:.2f} "
        f"logits hit {r['logits_cache_hit_rate']:.2f} | click p50/p95/p99 "
        f"{click['p50_ms']:.0f}/{click['p95_ms']:.0f}/{click['p99_ms']:.0f} ms | embed p50 "
        f"{(embed['p50_ms'] or 0):.0f} ms | {r['throughput_rps']:.1f} req/s | errors "
        f"{r['errors_by_status']}"
    )


def embedded_beyond_owner_changes(ok: list[Event]) -> int:
    """Images embedded more often than once per stint with an owner replica: 0 means every
    embedding after the first was caused by the image changing replica."""
    owners: dict[str, list[str]] = defaultdict(list)
    misses: Counter[str] = Counter()
    for e in sorted(ok, key=lambda e: e.t):
        if not owners[e.image] or owners[e.image][-1] != e.replica:
            owners[e.image].append(e.replica)
        misses[e.image] += e.embedding_cache == "miss"
    return sum(1 for image, count in misses.items() if count > len(owners[image]))


def owner_change_times(events: list[Event]) -> list[float]:
    """When an image was first served by a replica other than its previous one."""
    last: dict[str, str] = {}
    times = []
    for e in sorted(events, key=lambda e: e.t):
        if e.status != 200:
            continue
        if e.image in last and last[e.image] != e.replica:
            times.append(e.t)
        last[e.image] = e.replica
    return times


def moved_images(events: list[Event], at: float, before: int, after: int) -> dict:
    """Images served both before and after a scale event whose owner changed, and of those
    the ones embedded again on the new owner; expected share 1/max(before, after)."""
    owners_before: dict[str, str] = {}
    owners_after: dict[str, str] = {}
    missed_after: set[str] = set()
    for e in sorted(events, key=lambda e: e.t):
        if e.status != 200:
            continue
        if e.t < at:
            owners_before[e.image] = e.replica
        else:
            owners_after.setdefault(e.image, e.replica)
            if e.embedding_cache == "miss":
                missed_after.add(e.image)
    live = [image for image in owners_after if image in owners_before]
    moved = [image for image in live if owners_after[image] != owners_before[image]]
    return {
        "live_images": len(live),
        "moved": len(moved),
        "re_embedded": len([image for image in moved if image in missed_after]),
        "expected_moved": len(live) / max(before, after),
    }
