"""The GPU path, measured the day a CUDA machine is at hand: one command, one JSON.

    python -m bench.gpu              # on a CUDA machine: ~6 min after the install
    python -m bench.gpu --cpu-smoke  # the same code on the CPU, tiny model (what CI runs)

On CUDA: the full-size SAM3 architecture with RANDOM weights (the gated checkpoint is not
needed to measure speed and memory), as the service runs it there: bf16 autocast, TF32,
embeddings cached on the GPU in bf16, masks thresholded on the GPU and copied once, warm-up
at start. Measured: embed and click (decode + mask encoding) p50/p99; bytes per cached image
and how many images fit per GiB and in the free GPU memory; then the serving benchmark — one
GPU segmenter replica behind the ingress on a local Ray instance, 1, 8 and 64 concurrent
annotators each embedding a picture and clicking on it by id — click p50/p99 and clicks per
second. Without CUDA it says so, runs the same steps on the CPU with the tiny model and few
requests (a smoke pass, figures meaningless), and exits 0.

Prints one JSON and writes it to bench/results/gpu.json (gpu-cpu-smoke.json for the smoke).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch

from bench.harness import deploy_and_wait, start_local_cluster
from bench.samples import image_body, smooth_image
from deployments.config import APP_NAME, load_config
from deployments.operations import SEGMENT, run
from sam3_core import EmbedRequest, EngineSettings, PromptSet, Segmenter, SegmentRequest

RESULTS = Path(__file__).parent / "results"
PHOTO = (1080, 1920)


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def click(x: float, y: float) -> PromptSet:
    return PromptSet.model_validate({"points": [{"x": x, "y": y, "positive": True}]})


def engine_figures(engine: dict, embeds: int, clicks: int) -> dict:
    """Embeds and clicks in this process, as a replica runs them."""
    started = time.perf_counter()
    segmenter = Segmenter.from_settings(EngineSettings(**engine))  # warms up on a GPU
    build_s = time.perf_counter() - started
    height, width = PHOTO
    embed_s, click_s = [], []
    for i in range(embeds):
        data = smooth_image(i, height, width)
        started = time.perf_counter()
        image_id = segmenter.embed(EmbedRequest(image=data)).image_id
        synchronize()
        embed_s.append(time.perf_counter() - started)
    rng = random.Random(0)
    for _ in range(clicks):
        request = SegmentRequest(
            image_id=image_id,
            prompts=click(rng.uniform(0, width), rng.uniform(0, height)),
            mask_format="rle",
        )
        started = time.perf_counter()
        run(segmenter, SEGMENT, request, "bench")  # the reply's host copy synchronises
        click_s.append(time.perf_counter() - started)
    stats = segmenter.stats()
    per_image = stats.embedding_cache_bytes / max(1, stats.embedding_cache_entries)
    out = {
        "model": segmenter.model.arch.name,
        "device": str(segmenter.model.device),
        "build_s": build_s,
        "embed": percentiles(embed_s[1:] or embed_s),
        "click": percentiles(click_s),
        "bytes_per_cached_image": per_image,
        "cached_images_per_gib": 2**30 / per_image,
    }
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        out |= {
            "gpu": torch.cuda.get_device_name(),
            "gpu_memory_total_bytes": total,
            "gpu_memory_free_bytes": free,
            "cached_images_in_free_gpu_memory": int(free / per_image),
            "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(),
        }
    return out


def annotate(base: str, annotator: int, clicks: int) -> list[float]:
    """One annotator: embed a picture of their own, then click on it by id."""
    session = requests.Session()
    height, width = PHOTO
    data = smooth_image(1000 + annotator, height, width)
    embedded = session.post(f"{base}/sam3/embed_image", json={"image": image_body(data)})
    image_id = embedded.json()["image_id"]
    rng = random.Random(annotator)
    seconds = []
    for _ in range(clicks):
        point = {"x": rng.uniform(0, width), "y": rng.uniform(0, height), "positive": True}
        body = {"image_id": image_id, "prompts": {"points": [point]}, "format": "rle"}
        started = time.perf_counter()
        response = session.post(f"{base}/sam3/visual_segment", json=body, timeout=300)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text[:200]
    return seconds


def serving_figures(engine: dict, gpus: int, annotators: list[int], clicks: int) -> dict:
    cluster = start_local_cluster(workers=0, head_cpus=4, head_gpus=gpus)
    try:
        config = load_config(
            args={"engine": engine, "segmenter_gpus": min(gpus, 1), "ingress_cpus": 0.5},
            deployments={"Segmenter": {"num_replicas": 1}, "Ingress": {"num_replicas": 1}},
        )
        deploy_and_wait(config, {APP_NAME: 1}, cluster.url, image_body(smooth_image(999)))
        out = {}
        for count in annotators:
            started = time.perf_counter()
            with ThreadPoolExecutor(count) as pool:
                latencies = [
                    s
                    for r in pool.map(lambda a: annotate(cluster.url, a, clicks), range(count))
                    for s in r
                ]
            out[f"{count}_annotators"] = {
                "click": percentiles(latencies),
                "requests_per_s": (count * (clicks + 1)) / (time.perf_counter() - started),
            }
        return out
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the CPU pass, even with CUDA")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    if cuda:
        engine = {"random_weights": "full", "device": "cuda"}
        sizes = {"embeds": 20, "clicks": 200, "annotators": [1, 8, 64], "serving_clicks": 20}
    else:
        print("No CUDA device: a CPU smoke pass of the same steps on the tiny model.")
        engine = {"random_weights": "tiny", "device": "cpu", "max_hole_area": 0}
        sizes = {"embeds": 3, "clicks": 10, "annotators": [1, 2], "serving_clicks": 3}
    report = {
        "cuda": cuda,
        "weights": f"random ({engine['random_weights']})",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "engine": engine_figures(engine, sizes["embeds"], sizes["clicks"]),
        "serving": serving_figures(
            engine,
            torch.cuda.device_count() if cuda else 0,
            sizes["annotators"],
            sizes["serving_clicks"],
        ),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    name = "gpu.json" if cuda else "gpu-cpu-smoke.json"
    (args.results / name).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
