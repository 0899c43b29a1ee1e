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
from bench.interactive.cost import cost_ratio
from bench.interactive.plots import plot
from bench.interactive.scenario import ROUTERS, run_all
from bench.interactive.workload import FULL, HEIGHT, QUICK, WIDTH, Workload
from sam3_core.architecture import NARROW

RESULTS = Path(__file__).parents[1] / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench.interactive", description=bench.interactive.__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small run, < 3 min")
    parser.add_argument("--replicas", type=int, nargs="+", help="R values (default 3 4)")
    parser.add_argument("--annotators", type=int)
    parser.add_argument("--clicks", type=int)
    parser.add_argument("--images-per-annotator", type=int)
    parser.add_argument("--think-s", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--routers", nargs="+", default=list(ROUTERS), choices=ROUTERS)
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

    # Logical CPUs: three apps of R segmenters (0.5 each) and an ingress, one replica more
    # during the scale events; they share this machine's physical cores.
    cluster = start_local_cluster(workers=0, head_cpus=16)
    started = time.monotonic()
    try:
        runs, scale = run_all(cluster, workload, replica_counts, args.routers)
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
        "runs": runs,
        "scale": scale,
        "wall_seconds": time.monotonic() - started,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = "interactive-quick" if args.quick else "interactive"
    report["plots"] = plot(report, RESULTS, stem)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    print(
        f"wrote bench/results/{stem}.json and {', '.join(report['plots'])} "
        f"in {report['wall_seconds']:.0f} s"
    )
    return report


if __name__ == "__main__":
    main()
