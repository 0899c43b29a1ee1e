"""The command line: `python -m bench.reliability [--quick] [scenario ...]` runs scenarios on
one local cluster and merges their figures into bench/results/reliability[-quick].json."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import bench.reliability
from bench.harness import start_local_cluster
from bench.reliability import FULL, QUICK, SCENARIOS
from bench.reliability.soak import plot_soak

RESULTS = Path(__file__).parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reliability", description=bench.reliability.__doc__.split("\n")[0]
    )
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


if __name__ == "__main__":
    main()
