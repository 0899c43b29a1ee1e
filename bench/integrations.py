"""Clicks through Label Studio against the plain route: embeds per image and click latency.

    python -m bench.integrations        # ~2-5 minutes (Label Studio's start included)

Writes bench/results/integrations.json. The service runs in-process (`local_service`, one
engine, the tiny random-weights model, one torch thread) and a real Label Studio
(bench/label_studio.py) uses it as its ML backend. Annotators' sessions: on each image, clicks
accumulate one by one (alternately positive and negative), each request carrying all of them,
as Label Studio sends them. Three paths, each on images of its own:

- `plain`: `/sam3/visual_segment` by `image_id` (embedded first by `/sam3/embed_image`), RLE,
  with the logits cache: what a client of the plain API pays;
- `adapter`: `/label-studio/predict` called directly with Label Studio's body (the image a
  Label Studio upload path, fetched from Label Studio once): the adapter's own cost;
- `label_studio`: Label Studio's `/api/ml/{id}/interactive-annotating`, what the labelling page
  asks: Label Studio's own overhead included.

Embeds per image come from the engine's counters (an embed is a cache miss that brought the
image's bytes); the goal is 1.00: the image is fetched and embedded once, whatever the clicks.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests
import torch

from bench import label_studio
from bench.local_service import free_port, local_service
from bench.samples import encode_image, random_pixels
from sam3_core.engine import Segmenter
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

RESULTS = Path(__file__).parent / "results" / "integrations.json"
HEIGHT, WIDTH = 480, 640


def clicks(n: int, seed: int) -> list[tuple[float, float, bool]]:
    """An annotator's clicks on one object: around a centre, alternately positive, negative."""
    cx, cy = 200 + 37 * seed % 240, 150 + 23 * seed % 180
    return [(cx + 9 * i, cy + 7 * (i % 3), i % 2 == 0) for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p90_ms": percentile(ms, 0.9),
        "mean_ms": statistics.fmean(ms),
    }


def image_input(png: bytes) -> dict[str, str]:
    return {"type": "base64", "value": base64.b64encode(png).decode()}


def keypoint(x: float, y: float, positive: bool) -> dict:
    return {
        "type": "keypointlabels",
        "from_name": "point",
        "to_name": "image",
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "is_positive": positive,
        "value": {"x": x / WIDTH * 100, "y": y / HEIGHT * 100, "keypointlabels": ["square"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4, help="images per path")
    parser.add_argument("--clicks", type=int, default=8, help="clicks per image")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    settings = EngineSettings(random_weights="tiny", device="cpu", max_hole_area=0)
    engine = Segmenter(load_model(settings), settings)
    images = {
        path: [encode_image(random_pixels(100 * k + i, HEIGHT, WIDTH)) for i in range(args.images)]
        for k, path in enumerate(("plain", "adapter", "label_studio"))
    }
    times: dict[str, list[float]] = {path: [] for path in images}
    embeds: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        label_studio.running(Path(folder), free_port()) as studio,
        local_service(
            engine, label_studio_url=studio.url, label_studio_api_key=studio.token
        ) as service,
    ):
        project = studio.create_project("bench")
        tasks = {
            path: [studio.import_image(project, f"{path}-{i}.png", png)["id"] for i, png in
                   enumerate(pngs)]
            for path, pngs in images.items() if path != "plain"
        }  # fmt: skip
        backend = studio.connect(project, f"{service}/label-studio")["id"]
        http = requests.Session()
        before = engine.stats().embedding_cache_misses
        image_ids = [
            http.post(f"{service}/sam3/embed_image", json={"image": image_input(png)}).json()[
                "image_id"
            ]
            for png in images["plain"]
        ]
        embeds["plain"] = engine.stats().embedding_cache_misses - before
        # Reading a task through Label Studio's API asks its backend for a pre-annotation
        # (as the labelling page does when it opens a task): the image's first embed may be
        # that one. Each path's images are its own, so its embeds are counted apart.
        task_bodies, counted = {}, {}
        for path in tasks:
            before = engine.stats().embedding_cache_misses
            task_bodies[path] = [studio.api("GET", f"/api/tasks/{task}") for task in tasks[path]]
            counted[path] = engine.stats().embedding_cache_misses - before
        # The paths take turns, click by click, so that the shared machine's load falls on
        # each alike.
        for i in range(args.images):
            session = clicks(args.clicks, i)
            for n in range(1, len(session) + 1):
                regions = [keypoint(*click) for click in session[:n]]
                points = [{"x": x, "y": y, "positive": p} for x, y, p in session[:n]]
                for path in images:
                    before = engine.stats().embedding_cache_misses
                    started = time.perf_counter()
                    if path == "plain":
                        body = {
                            "image_id": image_ids[i],
                            "format": "rle",
                            "prompts": [{"points": points}],
                            "save_logits_to_cache": True,
                            "load_logits_from_cache": True,
                        }
                        response = http.post(f"{service}/sam3/visual_segment", json=body)
                        response.raise_for_status()
                    elif path == "adapter":
                        body = {
                            "tasks": [task_bodies[path][i]],
                            "label_config": label_studio.BRUSH_CONFIG,
                            "params": {"context": {"result": regions}},
                        }
                        response = http.post(f"{service}/label-studio/predict", json=body)
                        response.raise_for_status()
                    else:
                        studio.interactive(backend, tasks[path][i], regions)
                    times[path].append(time.perf_counter() - started)
                    misses = engine.stats().embedding_cache_misses - before
                    if path == "plain":
                        assert misses == 0, "a click by image_id embedded"
                    else:
                        counted[path] += misses
        embeds.update(counted)
    results = {
        "model": "tiny random weights, one torch thread, CPU",
        "image": [HEIGHT, WIDTH],
        "images_per_path": args.images,
        "clicks_per_image": args.clicks,
        "embeds_per_image": {path: embeds[path] / args.images for path in images},
        "click": {path: summary(seconds) for path, seconds in times.items()},
        "label_studio_version": label_studio.VERSION,
        # The machine is shared: its 1-minute load average when the run began and ended.
        "load_average": [load_before, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
