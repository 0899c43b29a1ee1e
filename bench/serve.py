"""Serving overhead: HTTP latency of sam3-serve next to a no-op two-hop Ray Serve app.

    python -m bench.serve              # ~2 min on 2 cores
    python -m bench.serve --requests 1000

One local Ray instance runs both apps side by side: ours (serve_config.yaml's application,
tiny random-weights model, one segmenter replica) and a no-op app of the same shape (FastAPI
ingress -> handle with session_id -> a replica that returns at once). Per request type it
prints p50/p99; "ours - no-op" is what we add on top of Ray Serve's two hops, model included,
and "ours - no-op - engine" what is left once the engine's own time (measured in-process on
the same image and prompt, one torch thread as in the replica) is taken out.
"""

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch
from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle

from bench.harness import deploy_and_wait, start_local_cluster
from bench.samples import image_body, random_image
from deployments.config import APP_NAME, load_config
from deployments.operations import SEGMENT, run
from sam3_core import EmbedRequest, EngineSettings, PromptSet, Segmenter, SegmentRequest

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "bench" / "results"
TINY = {"random_weights": "tiny", "device": "cpu"}


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class NoopReplica:
    async def click(self, body: dict) -> dict:
        return {"predictions": [], "replica": "noop"}


noop_api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
@serve.ingress(noop_api)
class NoopIngress:
    def __init__(self, downstream: DeploymentHandle) -> None:
        self.downstream = downstream

    @noop_api.post("/click")
    async def click(self, request: Request) -> dict:
        body = await request.json()
        owner = self.downstream.options(session_id=body.get("image_id", ""))
        return await owner.click.remote(body)


def photo(seed: int) -> bytes:
    """The 640x480 JPEG of random pixels this benchmark sends."""
    return random_image(seed, 480, 640, "JPEG", quality=90)


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def timed_posts(session: requests.Session, url: str, bodies: list[dict]) -> list[float]:
    seconds = []
    for body in bodies:
        started = time.perf_counter()
        response = session.post(url, json=body, timeout=60)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return seconds


def deploy_ours(base_url: str) -> None:
    config = load_config(
        args={"engine": TINY, "segmenter_cpus": 1, "ingress_cpus": 0.5},
        deployments={"Segmenter": {"num_replicas": 1}, "Ingress": {"num_replicas": 1}},
    )
    probe = image_body(photo(99))
    deploy_and_wait(config, {APP_NAME: 1}, base_url, probe)


def engine_alone(image: bytes, prompt: dict, repeat: int) -> dict[str, dict[str, float]]:
    # Ray gives an actor with num_cpus=1 OMP_NUM_THREADS=1: torch runs one thread there too.
    torch.set_num_threads(1)
    engine = Segmenter.from_settings(EngineSettings(**TINY))
    image_id = engine.embed(EmbedRequest(image=image)).image_id
    request = SegmentRequest(image_id=image_id, prompts=PromptSet.model_validate(prompt))
    clicks = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(engine, SEGMENT, request, "alone")  # decode and encode, as a replica does
        clicks.append(time.perf_counter() - started)
    embeds = []
    for seed in range(min(repeat, 100)):
        data = photo(10_000 + seed)
        started = time.perf_counter()
        engine.embed(EmbedRequest(image=data))
        embeds.append(time.perf_counter() - started)
    return {"click": percentiles(clicks), "embed": percentiles(embeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    n = args.requests

    cluster = start_local_cluster(workers=0, head_cpus=2)
    base = cluster.url
    deploy_ours(base)
    serve.run(NoopIngress.bind(NoopReplica.bind()), name="noop", route_prefix="/noop")
    session = requests.Session()

    # Embeds first: 150 new images would push the clicked image out of the count-limited LRU.
    embed_bodies = [{"image": image_body(photo(1000 + i))} for i in range(min(n, 150))]
    ours_embed = timed_posts(session, f"{base}/sam3/embed_image", embed_bodies)
    noop_embed = timed_posts(session, f"{base}/noop/click", embed_bodies)

    image = photo(0)
    embedded = session.post(f"{base}/sam3/embed_image", json={"image": image_body(image)})
    image_id = embedded.json()["image_id"]
    prompt = {"points": [{"x": 320, "y": 240, "positive": True}]}
    click = {"image_id": image_id, "prompts": prompt}
    for _ in range(20):  # warm up both paths
        session.post(f"{base}/sam3/visual_segment", json=click)
        session.post(f"{base}/noop/click", json=click)

    # Interleave the two apps so drifts of this noisy machine hit both alike.
    ours_click, noop_click = [], []
    for _ in range(n):
        ours_click += timed_posts(session, f"{base}/sam3/visual_segment", [click])
        noop_click += timed_posts(session, f"{base}/noop/click", [click])

    def concurrent(url: str, body: dict, clients: int = 8, each: int = 50) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for _ in range(clients):
                pool.submit(timed_posts, requests.Session(), url, [body] * each)
        return clients * each / (time.perf_counter() - started)

    throughput = {
        "ours_click_rps": concurrent(f"{base}/sam3/visual_segment", click),
        "noop_rps": concurrent(f"{base}/noop/click", click),
    }
    cluster.shutdown()
    alone = engine_alone(image, prompt, repeat=min(n, 300))

    report = {
        "weights": "random (tiny model, 224 px input)",
        "image": "640x480 JPEG",
        "click": {"ours": percentiles(ours_click), "noop": percentiles(noop_click)},
        "embed": {"ours": percentiles(ours_embed), "noop_same_body": percentiles(noop_embed)},
        "engine_in_process": alone,
        "throughput_8_clients": throughput,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(report, indent=2))
    print_report(report)


def print_report(report: dict) -> None:
    print(f"RANDOM weights, {report['weights']}; {report['image']}")
    print(
        f"{'request':<8} {'ours p50':>9} {'p99':>8} | {'no-op p50':>9} {'p99':>8} | "
        f"{'added p50':>9} | {'engine p50':>10} | {'left p50':>8}  (ms)"
    )
    for kind, noop_key in (("click", "noop"), ("embed", "noop_same_body")):
        ours, noop = report[kind]["ours"], report[kind][noop_key]
        engine = report["engine_in_process"][kind]
        added = ours["p50_ms"] - noop["p50_ms"]
        print(
            f"{kind:<8} {ours['p50_ms']:9.2f} {ours['p99_ms']:8.2f} | {noop['p50_ms']:9.2f} "
            f"{noop['p99_ms']:8.2f} | {added:9.2f} | {engine['p50_ms']:10.2f} | "
            f"{added - engine['p50_ms']:8.2f}"
        )
    t = report["throughput_8_clients"]
    print(
        f"8 concurrent clients: ours {t['ours_click_rps']:.0f} clicks/s, no-op "
        f"{t['noop_rps']:.0f} requests/s ({t['ours_click_rps'] / t['noop_rps']:.2f}x)"
    )


if __name__ == "__main__":
    main()
