"""What handing freed memory back costs and saves: the engine on the CPU, three ways.

    python -m bench.memory             # ~3 min on 2 cores
    python -m bench.memory --rounds 1

Each configuration runs in its own process (glibc reads MALLOC_ARENA_MAX at start), the
configurations alternating over `--rounds` rounds, all in one run:

- glibc's defaults (8 malloc arenas per core), no trim;
- one arena (`MALLOC_ARENA_MAX=1`, what the segmenter deployment sets), no trim;
- one arena and `SAM3_RELEASE_FREED_MEMORY` on (the service's default on the CPU).

The workload is the soak's: 40 distinct 640x480 images, each embedded and then clicked twice,
two images at a time on a pool of 4 threads (a replica's `segmenter_threads`), with a cache
budget of 8 images, on the "narrow" random-weights model (SAM3's 1008 px feature maps; one
torch thread, as in a replica with one CPU). Printed per configuration: median embed,
first click after an embed and second click, and the process's private memory (RSS less
shared pages) beyond its cache at the end and at its peak. Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.child import run_child

RESULTS = Path(__file__).parent / "results"
CONFIGS = {
    "default arenas, no trim": ({}, False),
    "one arena, no trim": ({"MALLOC_ARENA_MAX": "1"}, False),
    "one arena, trim (service default)": ({"MALLOC_ARENA_MAX": "1"}, True),
}
IMAGES = 40
BUDGET_IMAGES = 8
SKIP = 6  # warm-up calls left out of the medians


def child(release: bool) -> dict:
    """The workload in this process; returns its figures."""
    import psutil
    import torch

    from bench.samples import random_image
    from deployments.operations import SEGMENT, run
    from sam3_core import EmbedRequest, EngineSettings, PromptSet, Segmenter, SegmentRequest

    torch.set_num_threads(1)
    segmenter = Segmenter.from_settings(
        EngineSettings(
            random_weights="narrow",
            max_hole_area=0,
            device="cpu",
            embedding_cache_bytes=BUDGET_IMAGES * 5_308_416,
            release_freed_memory=release,
        )
    )
    process = psutil.Process()
    embed, first, second, beyond = [], [], [], []

    def annotate(i: int) -> None:
        """Embed image i, then two clicks on it, each call timed."""
        data = random_image(i, 480, 640)
        started = time.perf_counter()
        image_id = segmenter.embed(EmbedRequest(image=data)).image_id
        embed.append(time.perf_counter() - started)
        for click, seconds in enumerate((first, second)):
            point = {"x": 100 + 50 * click, "y": 200, "positive": True}
            request = SegmentRequest(
                image_id=image_id,
                prompts=PromptSet.model_validate({"points": [point]}),
                mask_format="rle",
            )
            started = time.perf_counter()
            run(segmenter, SEGMENT, request, "bench")  # decode and encode, as served
            seconds.append(time.perf_counter() - started)

    # Two annotators at a time on a pool of the replica's size (segmenter_threads: 4).
    with ThreadPoolExecutor(4) as pool:
        for i in range(0, IMAGES, 2):
            list(pool.map(annotate, (i, i + 1)))
            memory = process.memory_info()
            beyond.append(memory.rss - memory.shared - segmenter.embeddings.nbytes)

    def median_ms(seconds: list[float]) -> float:
        return statistics.median(seconds[SKIP:]) * 1000

    return {
        "embed_ms": median_ms(embed),
        "first_click_ms": median_ms(first),
        "second_click_ms": median_ms(second),
        "private_beyond_cache_end_bytes": beyond[-1],
        "private_beyond_cache_peak_bytes": max(beyond),
        "private_beyond_cache_after_first_image_bytes": beyond[0],
    }


def run(name: str) -> dict:
    env, release = CONFIGS[name]
    return run_child("bench.memory", "--child", str(int(release)), env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["0", "1"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child == "1")))
        return
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name in CONFIGS:
            runs[name].append(run(name))
    report = {
        "machine": {"cores": os.cpu_count()},
        "weights": "random (narrow)",
        "images": IMAGES,
        "budget_images": BUDGET_IMAGES,
        "rounds": args.rounds,
        # Per configuration, the median over rounds of each figure.
        "configs": {
            name: {key: statistics.median(r[key] for r in results) for key in results[0]}
            for name, results in runs.items()
        },
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(report, indent=1))
    mib = 2**20
    print(f"RANDOM weights (narrow); {IMAGES} images, cache budget {BUDGET_IMAGES} images")
    for name, r in report["configs"].items():
        print(
            f"{name:36s} embed {r['embed_ms']:5.0f} ms, first click {r['first_click_ms']:5.1f} "
            f"ms, second click {r['second_click_ms']:5.1f} ms; private memory beyond the cache "
            f"{r['private_beyond_cache_end_bytes'] / mib:5.0f} MiB at the end, "
            f"{r['private_beyond_cache_peak_bytes'] / mib:5.0f} MiB at peak"
        )


if __name__ == "__main__":
    main()
