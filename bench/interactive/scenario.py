"""What runs on the cluster: serve_config.yaml's application in variants deployed side by side
(`Variant`: the request router, the load bound, the replica count or autoscaling), and the
router comparison: the same workload against one application per request router."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ray import serve
from ray.serve.schema import ServeDeploySchema

from bench.harness import deploy_and_wait
from bench.interactive.metrics import SERVER_COUNTERS, Metrics
from bench.interactive.stats import summarise, summary_row
from bench.interactive.workload import Workload, picture, run_workload
from deployments.config import APP_NAME, load_config

ROUTERS = ("consistent_hash", "power_of_two", "round_robin")
# The whole run's images fit one replica's cache (they all come back to one after the last
# scale-in): an image that is evicted is not one that was lost.
ENGINE = {
    "random_weights": "narrow",
    "max_hole_area": 0,
    "device": "cpu",
    "max_embedding_cache_size": 1000,
}


@dataclass(frozen=True)
class Variant:
    """One application of the benchmark, served under `/<name>`: serve_config.yaml's, with
    the benchmark's engine and CPU shares, and what the variant changes."""

    name: str
    router: str = "consistent_hash"
    args: dict[str, Any] = field(default_factory=dict)
    # The Segmenter's replica options: {"num_replicas": R} or {"autoscaling_config": ...}.
    segmenter: dict[str, Any] = field(default_factory=dict)

    @property
    def app(self) -> str:
        return f"{APP_NAME}-{self.name}"

    def url(self, base_url: str) -> str:
        return f"{base_url}/{self.name}"


def apps_config(variants: list[Variant]) -> ServeDeploySchema:
    apps = []
    for variant in variants:
        (app,) = load_config(
            args={
                "engine": ENGINE,
                "router": variant.router,
                "segmenter_cpus": 0.5,
                "segmenter_threads": 2,
                "ingress_cpus": 0.25,
                **variant.args,
            },
            deployments={"Segmenter": variant.segmenter, "Ingress": {"num_replicas": 1}},
        ).applications
        apps.append(
            app.model_copy(update={"name": variant.app, "route_prefix": f"/{variant.name}"})
        )
    return ServeDeploySchema(applications=apps)


def deploy(variants: list[Variant], base_url: str, replicas: dict[str, int]) -> None:
    """Deploy `variants`, replacing whatever runs, and wait until each serves with
    `replicas[name]` segmenters."""
    started = time.monotonic()
    for name in list(serve.status().applications):
        serve.delete(name)
    deploy_and_wait(
        apps_config(variants),
        {v.app: replicas[v.name] for v in variants},
        base_url,
        picture(1),
    )
    print(
        f"deployed {', '.join(f'{v.name} x {replicas[v.name]}' for v in variants)} in "
        f"{time.monotonic() - started:.0f} s",
        flush=True,
    )


def compare_routers(
    base_url: str,
    metrics: Metrics,
    workload: Workload,
    replica_counts: list[int],
    routers: list[str],
) -> list[dict]:
    """Every router at every replica count: one summary per run."""
    runs = []
    for replicas in replica_counts:
        variants = [
            Variant(router, router=router, segmenter={"num_replicas": replicas})
            for router in routers
        ]
        deploy(variants, base_url, {v.name: replicas for v in variants})
        baselines = metrics.settled_totals()
        for variant in variants:
            before = baselines.get(variant.app, dict.fromkeys(SERVER_COUNTERS, 0.0))
            runs.append(run_router(variant, replicas, workload, base_url, metrics, before))
    return runs


def run_router(
    variant: Variant,
    replicas: int,
    workload: Workload,
    base_url: str,
    metrics: Metrics,
    before: dict[str, float],
) -> dict:
    metrics.start(variant.app)
    recorder = run_workload(workload, variant.url(base_url), tag=f"{variant.name}-r{replicas}")
    peak = metrics.stop()
    after = metrics.settled_totals().get(variant.app, dict.fromkeys(SERVER_COUNTERS, 0.0))
    server = {k: after[k] - before[k] for k in SERVER_COUNTERS}
    server["not_cached"] = sum(1 for e in recorder.events if e.status == 404)
    report = summarise(variant.router, replicas, workload, recorder, server, peak)
    print(summary_row(report), flush=True)
    return report
