"""The command line: `python -m bench.interactive [--quick] ...` runs the benchmark and
writes its report (JSON and plots) to bench/results/."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import ray
import torch

import bench.interactive
from bench.harness import start_local_cluster
from bench.interactive.autoscale import (
    AUTOSCALE_FULL,
    AUTOSCALE_QUICK,
    FULL_RAMP,
    QUICK_RAMP,
    autoscale_run,
)
from bench.interactive.cost import cost_ratio
from bench.interactive.hot import HOT_FULL, HOT_QUICK, hot_run
from bench.interactive.metrics import Metrics
from bench.interactive.plots import plot
from bench.interactive.scenario import ROUTERS, compare_routers
from bench.interactive.workload import FULL, HEIGHT, QUICK, WIDTH, Workload
from sam3_core.architecture import NARROW

RESULTS = Path(__file__).parents[1] / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench.interactive", description=bench.interactive.__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small run (CI), ~5 min")
    parser.add_argument("--replicas", type=int, nargs="+", help="R values (default 3 4)")
    parser.add_argument("--annotators", type=int)
    parser.add_argument("--clicks", type=int)
    parser.add_argument("--images-per-annotator", type=int)
    parser.add_argument("--think-s", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--routers", nargs="+", default=list(ROUTERS), choices=ROUTERS)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and plots go")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["routers", "autoscale", "hot"],
        choices=["routers", "autoscale", "hot"],
        help="which parts to run (default all)",
    )
    args = parser.parse_args(argv)

    workload = QUICK if args.quick else FULL
    overrides = {
        "annotators": args.annotators,
        "clicks": args.clicks,
        "images_per_annotator": args.images_per_annotator,
        "think_s": args.think_s,
    }
    workload = Workload(
        **{**asdict(workload), **{k: v for k, v in overrides.items() if v}, "seed": args.seed}
    )
    replica_counts = args.replicas or ([2] if args.quick else [3, 4])

    ratio = cost_ratio()
    print(
        f"model: random weights, {NARROW.name} ({NARROW.image_size} px); one CPU thread: "
        f"embed {ratio['embed_ms']:.0f} ms, decode {ratio['decode_ms']:.1f} ms, "
        f"ratio {ratio['ratio']:.1f}:1",
        flush=True,
    )

    # Logical CPUs: three apps of R segmenters (0.5 each) and an ingress; they share this
    # machine's physical cores.
    # Images handed between replicas pass through the object store: room for a few batches.
    cluster = start_local_cluster(workers=0, head_cpus=16, object_store_mib=1024)
    metrics = Metrics(cluster.metrics)
    started = time.monotonic()
    report: dict = {}
    try:
        if "routers" in args.parts:
            report["runs"] = compare_routers(
                cluster.url, metrics, workload, replica_counts, args.routers
            )
        if "autoscale" in args.parts:
            scale_workload = AUTOSCALE_QUICK if args.quick else AUTOSCALE_FULL
            ramp = QUICK_RAMP if args.quick else FULL_RAMP
            report["scale"] = autoscale_run(cluster.url, metrics, scale_workload, ramp)
            report["scale"]["workload"] = asdict(scale_workload)
            report["scale"]["ramp"] = asdict(ramp)
            print_scale(report["scale"])
        if "hot" in args.parts:
            report["hot"] = hot_run(cluster.url, metrics, HOT_QUICK if args.quick else HOT_FULL)
    finally:
        cluster.shutdown()

    report = {
        "command": "python -m bench.interactive" + (" --quick" if args.quick else ""),
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "ray": ray.__version__,
        },
        "model": {
            "weights": "random",
            "architecture": NARROW.name,
            "image_size": NARROW.image_size,
            **ratio,
        },
        "workload": asdict(workload),
        "image": f"{WIDTH}x{HEIGHT} JPEG",
        **report,
        "wall_seconds": time.monotonic() - started,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "interactive-quick" if args.quick else "interactive"
    report["plots"] = plot(report, args.results, stem)
    (args.results / f"{stem}.json").write_text(json.dumps(report, indent=1))
    print(
        f"wrote {args.results / stem}.json and {', '.join(report['plots'])} "
        f"in {report['wall_seconds']:.0f} s"
    )
    return report


def print_scale(scale: dict) -> None:
    for event in scale["scale_events"]:
        print(
            f"autoscaler: {event['from_replicas']} -> {event['replicas']} replicas at "
            f"{event['t']:.0f} s: {event['live_images']} live images, {event['moved']} moved "
            f"(expected {event['expected_moved']:.1f}), {event['re_embedded']} re-embedded, "
            f"{event['not_found_after']} by-id 404s",
            flush=True,
        )
    handoff, embed = scale["handoff_ms_per_image"], scale["embed_ms_per_image"]
    print(
        f"hand-off: {handoff['count']:.0f} images, {handoff['mean_ms'] or 0:.1f} ms each; "
        f"embed: {embed['mean_ms'] or 0:.0f} ms each; re-embedded "
        f"{scale['re_embedded']}, 404s after the events {scale['not_found_after_scale_events']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
