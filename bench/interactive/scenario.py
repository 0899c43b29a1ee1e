"""What runs on the cluster: serve_config.yaml's application once per request router, the
workload against each, and a run of ours through a scale-out and a scale-in."""

from __future__ import annotations

import threading
import time

from ray import serve
from ray.serve.schema import ServeDeploySchema

from bench.harness import LocalCluster, deploy_and_wait, running
from bench.interactive.metrics import SERVER_COUNTERS, Metrics
from bench.interactive.stats import (
    moved_images,
    owner_change_times,
    summarise,
    summary_row,
)
from bench.interactive.workload import Recorder, Workload, picture, run_workload
from deployments.config import APP_NAME, deploy_config, load_config

ROUTERS = ("consistent_hash", "power_of_two", "round_robin")
ENGINE = {"random_weights": "narrow", "max_hole_area": 0, "device": "cpu"}

# Segmenter replicas each app's ingress was seen to reach, by app name.
REPLICAS: dict[str, set[str]] = {}


def app_name(router: str) -> str:
    return f"{APP_NAME}-{router}"


def apps_config(replicas: dict[str, int]) -> ServeDeploySchema:
    """serve_config.yaml's application once per router, under /<router>; only the router
    (and the replica count) differs."""
    apps = []
    for router, count in replicas.items():
        (app,) = load_config(
            args={
                "engine": ENGINE,
                "router": router,
                "segmenter_cpus": 0.5,
                "segmenter_threads": 2,
                "ingress_cpus": 0.25,
            },
            deployments={"Segmenter": {"num_replicas": count}, "Ingress": {"num_replicas": 1}},
        ).applications
        apps.append(app.model_copy(update={"name": app_name(router), "route_prefix": f"/{router}"}))
    return ServeDeploySchema(applications=apps)


def deploy(replicas: dict[str, int], base_url: str) -> None:
    """Deploy one app per router, replacing whatever runs, and wait until each serves."""
    for name in list(serve.status().applications):
        serve.delete(name)
    reached = deploy_and_wait(
        apps_config(replicas),
        {app_name(router): count for router, count in replicas.items()},
        base_url,
        picture(1),
    )
    REPLICAS.update(reached)


def run_all(
    cluster: LocalCluster, workload: Workload, replica_counts: list[int], routers: list[str]
) -> tuple[list[dict], dict]:
    """Every router at every replica count, then the scale run at the last count: the runs'
    summaries and the scale run's report."""
    base_url = cluster.url
    metrics = Metrics(cluster.metrics)
    runs = []
    for replicas in replica_counts:
        phase = time.monotonic()
        deploy({router: replicas for router in routers}, base_url)
        print(
            f"deployed {len(routers)} apps x {replicas} replicas in "
            f"{time.monotonic() - phase:.0f} s",
            flush=True,
        )
        baselines = metrics.settled_totals()
        for router in routers:
            before = baselines.get(app_name(router), dict.fromkeys(SERVER_COUNTERS, 0.0))
            runs.append(run_router(router, replicas, workload, base_url, metrics, before))
    # A longer run for the scale events: the added replica needs time to start.
    scale = scale_run(replica_counts[-1], workload, base_url, metrics)
    for event in scale["scale_events"]:
        print(
            f"scale to {event['replicas']} at {event['t']:.0f} s: {event['live_images']} "
            f"live images, {event['moved']} moved (expected {event['expected_moved']:.1f})"
            f", {event['re_embedded']} re-embedded",
            flush=True,
        )
    return runs, scale


def run_router(
    router: str,
    replicas: int,
    workload: Workload,
    base_url: str,
    metrics: Metrics,
    before: dict[str, float],
) -> dict:
    app = app_name(router)
    metrics.start(app)
    recorder = run_workload(workload, f"{base_url}/{router}", tag=f"{router}-r{replicas}")
    peak = metrics.stop()
    after = metrics.settled_totals().get(app, dict.fromkeys(SERVER_COUNTERS, 0.0))
    server = {k: after[k] - before[k] for k in SERVER_COUNTERS}
    server["not_cached"] = sum(1 for e in recorder.events if e.status == 404)
    report = summarise(router, replicas, workload, recorder, server, peak)
    print(summary_row(report), flush=True)
    return report


def scale_run(replicas: int, workload: Workload, base_url: str, metrics: Metrics) -> dict:
    """Ours, already deployed with `replicas`, under annotators who keep working while one
    replica is added (the event counts from when the new replica first answers) and, after
    a while, one is removed; they stop a while after that."""
    router = "consistent_hash"
    app = app_name(router)
    # Serve applies a config to every app it names: keep the other routers' apps as they are.
    counts = {r: replicas for r in ROUTERS if running(app_name(r), replicas)}
    recorder = Recorder()
    events: list[dict] = []
    stop = threading.Event()
    hold = max(5.0, workload.think_s * 20)

    def now() -> float:
        return time.monotonic() - recorder.started

    def rescale() -> None:
        try:
            time.sleep(hold / 2)
            counts[router] = replicas + 1
            deploy_config(apps_config(counts))
            known = REPLICAS[app]
            deadline = time.monotonic() + 600
            while not (added := {e.replica for e in recorder.events if e.replica} - known):
                if time.monotonic() > deadline:
                    raise TimeoutError("the added replica never answered")
                time.sleep(0.2)
            events.append({"t": now(), "replicas": replicas + 1, "added": added})
            time.sleep(hold)
            counts[router] = replicas
            deploy_config(apps_config(counts))
            events.append({"t": now(), "replicas": replicas})
            time.sleep(hold)
        finally:
            stop.set()

    metrics.start(app)
    controller = threading.Thread(target=rescale)
    controller.start()
    run_workload(workload, f"{base_url}/{router}", f"scale-r{replicas}", recorder, stop)
    controller.join()
    peak = metrics.stop()
    if len(events) != 2:
        raise RuntimeError(f"the scale events did not happen: {events}")
    # The ring changed when the first request the added replica answered was sent.
    added = events[0].pop("added")
    events[0]["t"] = min(e.t for e in recorder.events if e.replica in added)
    report = summarise(router, replicas, workload, recorder, None, peak)
    report["scale_events"] = [
        {**event, **moved_images(recorder.events, event["t"], before=r, after=event["replicas"])}
        for event, r in zip(events, [replicas, replicas + 1], strict=True)
    ]
    report["timeline"] = [
        {"t": e.t, "latency_ms": e.latency_s * 1000, "kind": e.kind, "status": e.status}
        for e in recorder.events
    ]
    report["re_embedded_after_scale_events"] = sum(s["re_embedded"] for s in report["scale_events"])
    report["owner_changes_before_first_scale_event"] = sum(
        1 for t in owner_change_times(recorder.events) if t < events[0]["t"]
    )
    return report
