"""Scale events made by Serve's autoscaler, not by a hand-set replica count: a ramp of
annotators takes the segmenter from 1 to 3 replicas through serve_config.yaml's
`autoscaling_config` (its `target_ongoing_requests`, with shorter delays and metric intervals
for the run), and back to 1 when the load ends; images move between replicas by hand-off.

Phases: annotators join one by one until the autoscaler has added replicas up to
`max_replicas` (then they keep working a while); all but one leave, and that one keeps
clicking until the autoscaler is back to 1 replica; last, every annotator comes back to each of
its images once, by `image_id` alone. Scale events are the moments this process's own request
router (the ingress's kind, `OwnerRouter`) hears a new replica set.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ray import serve

from bench.harness import wait_for
from bench.interactive.metrics import HistogramWatch, Metrics
from bench.interactive.scenario import Variant, deploy
from bench.interactive.stats import moved_images, percentiles, summarise
from bench.interactive.workload import Annotator, Recorder, Workload
from deployments.config import load_config
from deployments.ring import RINGS, Ring, deployment_name


@dataclass(frozen=True)
class Ramp:
    """Timing of the run (seconds) and the autoscaler's delays in it."""

    join_every_s: float
    hold_at_max_s: float
    hold_at_min_s: float
    upscale_delay_s: float
    downscale_delay_s: float
    look_back_period_s: float
    metrics_interval_s: float = 1.0
    max_replicas: int = 3


# Each annotator has at most one request in flight: reaching 3 replicas at the shipped
# target_ongoing_requests (4) takes more than 8 of them busy at once.
AUTOSCALE_QUICK = Workload(
    annotators=12,
    images_per_annotator=0,  # they work until told to stop
    clicks=3,
    think_s=0.1,
    id_only_share=0.5,
    revisit_share=0.5,
)
AUTOSCALE_FULL = Workload(
    annotators=16,
    images_per_annotator=0,
    clicks=6,
    think_s=0.2,
    id_only_share=0.5,
    revisit_share=0.25,
)
QUICK_RAMP = Ramp(
    join_every_s=1.0,
    hold_at_max_s=6.0,
    hold_at_min_s=3.0,
    upscale_delay_s=2.0,
    downscale_delay_s=6.0,
    look_back_period_s=3.0,
)
FULL_RAMP = Ramp(
    join_every_s=3.0,
    hold_at_max_s=30.0,
    hold_at_min_s=10.0,
    upscale_delay_s=5.0,
    downscale_delay_s=20.0,
    look_back_period_s=10.0,
)


def autoscaling_config(ramp: Ramp) -> dict[str, Any]:
    """serve_config.yaml's Segmenter `autoscaling_config`, from 1 to `ramp.max_replicas`,
    with the run's delays; `target_ongoing_requests` as shipped."""
    (app,) = load_config().applications
    (segmenter,) = [d for d in app.deployments if d.name == "Segmenter"]
    return {
        **segmenter.autoscaling_config,
        "min_replicas": 1,
        "max_replicas": ramp.max_replicas,
        "upscale_delay_s": ramp.upscale_delay_s,
        "downscale_delay_s": ramp.downscale_delay_s,
        "look_back_period_s": ramp.look_back_period_s,
        "metrics_interval_s": ramp.metrics_interval_s,
    }


class RingWatch:
    """The replica sets an application's routers route over, as heard by a router of this
    process: (seconds since `started`, ring) at each change."""

    def __init__(self, app: str, started: float) -> None:
        self.feed = deployment_name(app, "Segmenter")
        self.started = started
        self.changes: list[tuple[float, Ring]] = []
        RINGS.subscribe(self.feed, self._heard)
        serve.get_deployment_handle("Segmenter", app)._init()

    def _heard(self, ring: Ring) -> None:
        if ring.replicas:
            self.changes.append((time.monotonic() - self.started, ring))

    def replicas(self) -> int:
        return len(self.changes[-1][1].replicas) if self.changes else 0

    def close(self) -> None:
        RINGS.unsubscribe(self.feed, self._heard)


def autoscale_run(base_url: str, metrics: Metrics, workload: Workload, ramp: Ramp) -> dict:
    variant = Variant("autoscale", segmenter={"autoscaling_config": autoscaling_config(ramp)})
    deploy([variant], base_url, {variant.name: 1})
    recorder = Recorder()
    watch = RingWatch(variant.app, recorder.started)
    times = HistogramWatch(
        metrics,
        variant.app,
        {
            "handoff": ("ray_sam3_handoff_latency_seconds", {"direction": "sent"}),
            "embed": ("ray_sam3_embed_latency_seconds", {}),
        },
    )
    annotators = [
        Annotator(i, workload, variant.url(base_url), recorder, "autoscale")
        for i in range(workload.annotators)
    ]
    stops = [threading.Event() for _ in annotators]
    threads = [
        threading.Thread(target=a.run, args=(stop,))
        for a, stop in zip(annotators, stops, strict=True)
    ]
    phases: dict[str, float] = {}

    def now() -> float:
        return time.monotonic() - recorder.started

    try:
        for thread in threads:
            thread.start()
            if watch.replicas() >= ramp.max_replicas:
                break
            time.sleep(ramp.join_every_s)
        phases["annotators_joined"] = sum(1 for t in threads if t.is_alive())
        wait_for(lambda: watch.replicas() >= ramp.max_replicas, 600, "the scale-out")
        phases["at_max_s"] = now()
        time.sleep(ramp.hold_at_max_s)
        for stop in stops[1:]:  # the load ends; one annotator keeps working
            stop.set()
        phases["load_ended_s"] = now()
        wait_for(lambda: watch.replicas() == 1, 600, "the scale-in")
        phases["at_min_s"] = now()
        time.sleep(ramp.hold_at_min_s)
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join()
    phases["revisit_s"] = now()

    def revisit(annotator: Annotator) -> None:
        for image_id in list(annotator.images):
            annotator.click(image_id, send_image=False)

    # Each comes back to every image it worked on, by id; the annotators at once, as a team.
    revisits = [threading.Thread(target=revisit, args=(a,)) for a in annotators]
    for thread in revisits:
        thread.start()
    for thread in revisits:
        thread.join()
    watch.close()
    return report(recorder, watch, times.stop(), workload, phases)


def report(
    recorder: Recorder, watch: RingWatch, times: dict, workload: Workload, phases: dict
) -> dict:
    events = recorder.events
    rings = watch.changes
    scale_events = []
    for (_, before), (t, after) in itertools.pairwise(rings):
        moved = moved_images(events, t, before=len(before.replicas), after=len(after.replicas))
        later = [r_t for r_t, _ in rings if r_t > t]
        until = min(later, default=float("inf"))
        scale_events.append(
            {
                "t": t,
                "replicas": len(after.replicas),
                "from_replicas": len(before.replicas),
                **moved,
                "not_found_after": sum(1 for e in events if e.status == 404 and t <= e.t < until),
            }
        )
    summary = summarise("consistent_hash", 1, workload, recorder, None, {})
    first = scale_events[0]["t"] if scale_events else float("inf")
    last = scale_events[-1]["t"] if scale_events else float("inf")
    clicks = [e for e in events if e.kind == "click" and e.status == 200]
    misses = Counter(e.image for e in events if e.status == 200 and e.embedding_cache == "miss")
    # Images no answer showed embedded ("miss"), with what their requests got: an embed whose
    # answer was lost (status 0, a broken connection, or a 503) and that was sent again is
    # answered from the picture its first attempt stored ("hit", or "handoff" elsewhere).
    unseen = {
        image: [(e.kind, e.status, e.embedding_cache) for e in events if e.image == image]
        for image in sorted({e.image for e in events} - set(misses))
    }
    summary.update(
        {
            "autoscaling": True,
            "phases": phases,
            "replicas_timeline": [{"t": t, "replicas": len(r.replicas)} for t, r in rings],
            "scale_events": scale_events,
            # An image embedded more than once: each time after the first, it was lost.
            "re_embedded": sum(count - 1 for count in misses.values()),
            "images_not_seen_embedded": unseen,
            "re_embedded_after_scale_events": sum(e["re_embedded"] for e in scale_events),
            "not_found_after_scale_events": sum(
                1 for e in events if e.status == 404 and e.t >= first
            ),
            "handoff_outcomes": sum(1 for e in events if e.embedding_cache == "handoff"),
            "click_latency_by_phase": {
                "before_events": percentiles([e.latency_s for e in clicks if e.t < first]),
                "between_events": percentiles([e.latency_s for e in clicks if first <= e.t < last]),
                "after_events": percentiles([e.latency_s for e in clicks if e.t >= last]),
            },
            "handoff_ms_per_image": times["handoff"],
            "embed_ms_per_image": times["embed"],
            "timeline": [
                {"t": e.t, "latency_ms": e.latency_s * 1000, "kind": e.kind, "status": e.status}
                for e in events
            ],
        }
    )
    return summary
