"""Hot images: a whole team on a few images (one large aerial photo shared by everyone), with
strict affinity and with the load bound, side by side in one run.

Under strict affinity every click on a hot image queues on its owner while the other replicas
idle. With `load_factor`, a click whose owner is past the bound goes to the next replica on
the ring, which borrows the owner's embedding (a hand-off) instead of computing it. Each
replica runs one engine thread (`segmenter_threads: 1`, one torch thread), so that a replica's
capacity is one model call at a time, as a GPU's is one stream of kernels: on this machine's
two cores, spreading a hot image over replicas can use both cores where its owner alone uses
one. On GPUs each helper brings a GPU of its own.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass

from bench.interactive.metrics import SERVER_COUNTERS, Metrics
from bench.interactive.scenario import Variant, deploy
from bench.interactive.stats import percentiles
from bench.interactive.workload import Annotator, Recorder, Workload

LOAD_FACTOR = 1.25  # HAProxy's example hash-balance-factor is 125.


@dataclass(frozen=True)
class HotWorkload:
    """`annotators` share `images` images (annotator i works on image i mod `images`), each
    embedding it, then clicking `clicks` times; each run uses `images` of these counts."""

    annotators: int
    images: tuple[int, ...]
    clicks: int
    think_s: float
    replicas: int
    id_only_share: float = 0.5
    seed: int = 0


HOT_QUICK = HotWorkload(annotators=6, images=(1,), clicks=4, think_s=0.05, replicas=2)
HOT_FULL = HotWorkload(annotators=16, images=(1, 2), clicks=12, think_s=0.3, replicas=4)


class TeamMember(Annotator):
    """An annotator on one of the team's shared images."""

    def __init__(
        self, index: int, hot: HotWorkload, images: int, base_url: str, recorder: Recorder
    ) -> None:
        workload = Workload(
            annotators=hot.annotators,
            images_per_annotator=1,
            clicks=hot.clicks,
            think_s=hot.think_s,
            id_only_share=hot.id_only_share,
            revisit_share=0.0,
            seed=hot.seed,
        )
        super().__init__(index, workload, base_url, recorder, "hot")
        self.image_id = f"hot{images}-{index % images}"
        self.images[self.image_id] = 50_000 + index % images

    def run(self, stop: threading.Event | None = None) -> None:
        self.work(self.image_id, self.workload.clicks, embed_first=True)


def variants(hot: HotWorkload) -> list[Variant]:
    replicas = {"num_replicas": hot.replicas}
    return [
        Variant("hot-strict", args={"segmenter_threads": 1}, segmenter=replicas),
        Variant(
            "hot-bounded",
            args={"segmenter_threads": 1, "load_factor": LOAD_FACTOR},
            segmenter=replicas,
        ),
    ]


def hot_run(base_url: str, metrics: Metrics, hot: HotWorkload) -> dict:
    """Both variants deployed together; for each image count, the team works on one
    variant, then on the other."""
    chosen = variants(hot)
    deploy(chosen, base_url, {v.name: hot.replicas for v in chosen})
    runs = []
    for images in hot.images:
        for variant in chosen:
            before = metrics.settled_totals().get(variant.app, dict.fromkeys(SERVER_COUNTERS, 0.0))
            recorder = Recorder()
            team = [
                TeamMember(i, hot, images, variant.url(base_url), recorder)
                for i in range(hot.annotators)
            ]
            threads = [threading.Thread(target=member.run) for member in team]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            after = metrics.settled_totals().get(variant.app, dict.fromkeys(SERVER_COUNTERS, 0.0))
            server = {k: after[k] - before[k] for k in SERVER_COUNTERS}
            row = {"images": images, **summary(variant, recorder, server)}
            runs.append(row)
            print(
                f"hot, {images} image(s), {variant.name}: click p50/p99 "
                f"{row['click']['p50_ms']:.0f}/{row['click']['p99_ms']:.0f} ms, "
                f"{row['embeddings_computed']} embeddings, {row['throughput_rps']:.1f} req/s, "
                f"clicks by replica {row['clicks_by_replica']}",
                flush=True,
            )
    return {"workload": asdict(hot), "load_factor": LOAD_FACTOR, "runs": runs}


def summary(variant: Variant, recorder: Recorder, server: dict[str, float]) -> dict:
    events = recorder.events
    ok = [e for e in events if e.status == 200]
    clicks = [e for e in ok if e.kind == "click"]
    owners = {}
    for e in ok:
        if e.kind == "embed" and e.embedding_cache == "miss":
            owners[e.image] = e.replica
    logits = [e.logits_cache for e in clicks if e.logits_cache]
    duration = max(e.t + e.latency_s for e in events)
    return {
        "variant": variant.name,
        "load_factor": variant.args.get("load_factor"),
        "click": percentiles([e.latency_s for e in clicks]),
        "embed": percentiles([e.latency_s for e in ok if e.kind == "embed"]),
        "embeddings_computed": sum(1 for e in ok if e.embedding_cache == "miss"),
        "embeddings_computed_server": server["misses"],
        "handoffs_server": server["handoffs"],
        "cache_outcomes": dict(Counter(e.embedding_cache for e in ok)),
        "logits_cache_hit_rate": logits.count("hit") / max(1, len(logits)),
        "owners": owners,
        # Clicks per replica, the owners' marked: a helper is any other replica.
        "clicks_by_replica": dict(
            Counter(
                ("owner " if e.replica in owners.values() else "") + (e.replica or "?")
                for e in clicks
            )
        ),
        "clicks_on_helpers": sum(1 for e in clicks if e.replica not in owners.values()),
        "requests": len(events),
        "throughput_rps": len(events) / duration,
        "errors_by_status": dict(Counter(str(e.status) for e in events if e.status != 200)),
    }
