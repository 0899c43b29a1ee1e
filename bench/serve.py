"""Serving overhead, stage by stage: sam3-serve's HTTP latency next to a no-op two-hop Ray
Serve app, in one run.

    python -m bench.serve                 # ~4 min on 2 cores
    python -m bench.serve --requests 100  # quicker

One local Ray instance runs both apps side by side: ours (serve_config.yaml's application,
tiny random-weights model, one segmenter replica with one CPU) and a no-op app of the same
shape (FastAPI ingress -> handle with session_id -> a replica that returns at once). The two
are called in turn, so drifts of this noisy machine hit both alike. Reported:

- a click by `image_id` on a 640x480 picture: p50/p99 of ours and of the no-op app, and of
  each stage of ours from its own `Server-Timing` header (parse, owner, queue, decode,
  encode, replica, total). "Glue" is p50(click) - p50(no-op) - p50(decode + encode): what we
  add beyond Ray Serve's two hops and the click's own model work and mask encoding.
- the `inference-sdk`'s click, which resends the whole image every time, on a 12 MP JPEG of
  ~3.7 MB, next to the same click by id: the cost per MB of image resent.
- a click by id on 0.3, 3 and 12 MP pictures (RLE): what grows with the picture.
- embeds: ours and the no-op app given the same body.

Writes bench/results/serve.json.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import requests
from fastapi import FastAPI, Request, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from bench.harness import deploy_and_wait, start_local_cluster
from bench.samples import image_body, random_image, smooth_image
from deployments.config import APP_NAME, load_config

RESULTS = Path(__file__).parent / "results"
TINY = {"random_weights": "tiny", "device": "cpu", "max_hole_area": 0}
SIZES = {"0.3 MP": (480, 640), "3 MP": (1500, 2000), "12 MP": (3000, 4000)}


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class NoopReplica:
    """Answers at once, with a body the size of ours (random weights' noisy masks make
    large polygon answers, and moving them costs both apps alike)."""

    def __init__(self) -> None:
        self.answer = b""

    async def answer_with(self, answer: bytes) -> None:
        self.answer = answer

    async def click(self, body: dict) -> bytes:
        return self.answer


noop_api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
@serve.ingress(noop_api)
class NoopIngress:
    def __init__(self, downstream: DeploymentHandle) -> None:
        self.downstream = downstream

    @noop_api.post("/click")
    async def click(self, request: Request) -> Response:
        body = await request.json()
        owner = self.downstream.options(session_id=body.get("image_id", ""))
        return Response(await owner.click.remote(body), media_type="application/json")

    @noop_api.post("/answer_with")
    async def answer_with(self, request: Request) -> dict:
        await self.downstream.answer_with.remote(await request.body())
        return {}


def percentiles(ms: list[float]) -> dict[str, float]:
    values = np.array(ms)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "n": len(values),
    }


def stages_of(response: requests.Response) -> dict[str, float]:
    """The request's stages in ms, from its Server-Timing header."""
    items = (item.strip().split(";dur=") for item in response.headers["server-timing"].split(","))
    return {name: float(ms) for name, ms in items}


class Timed:
    """POSTs timed at the client, with their Server-Timing stages."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.client_ms: list[float] = []
        self.stages: list[dict[str, float]] = []

    def post(self, path: str, body: bytes) -> requests.Response:
        started = time.perf_counter()
        response = self.session.post(
            self.base + path, data=body, headers={"content-type": "application/json"}, timeout=120
        )
        self.client_ms.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text[:300]
        if "server-timing" in response.headers:
            self.stages.append(stages_of(response))
        return response

    def report(self) -> dict:
        out = {"client": percentiles(self.client_ms)}
        if self.stages:
            names = [name for name in self.stages[0] if all(name in s for s in self.stages)]
            out["stages"] = {name: percentiles([s[name] for s in self.stages]) for name in names}
            if {"decode", "encode"} <= set(names):
                model_work = [s["decode"] + s["encode"] for s in self.stages]
                out["decode_plus_encode"] = percentiles(model_work)
        return out


def alternate(n: int, *calls: tuple[Timed, str, bytes]) -> None:
    for _ in range(n):
        for timed, path, body in calls:
            timed.post(path, body)


def deploy_ours(base_url: str) -> None:
    config = load_config(
        args={"engine": TINY, "segmenter_cpus": 1, "ingress_cpus": 0.5},
        deployments={"Segmenter": {"num_replicas": 1}, "Ingress": {"num_replicas": 1}},
    )
    deploy_and_wait(config, {APP_NAME: 1}, base_url, image_body(random_image(99)))


def dumps(body: dict) -> bytes:
    return json.dumps(body).encode()


def click_by_id_vs_noop(base: str, n: int) -> dict:
    ours, noop = Timed(base), Timed(base)
    data = random_image(0, 480, 640, "JPEG", quality=90)
    image_id = ours.post("/sam3/embed_image", dumps({"image": image_body(data)})).json()
    prompt = {"points": [{"x": 320, "y": 240, "positive": True}]}
    click = dumps({"image_id": image_id["image_id"], "prompts": prompt})
    answer = ours.post("/sam3/visual_segment", click).content
    Timed(base).post("/noop/answer_with", answer)
    alternate(20, (ours, "/sam3/visual_segment", click), (noop, "/noop/click", click))
    ours, noop = Timed(base), Timed(base)
    alternate(n, (ours, "/sam3/visual_segment", click), (noop, "/noop/click", click))
    out = {"ours": ours.report(), "noop": noop.report(), "answer_bytes": len(answer)}
    out["glue_p50_ms"] = (
        out["ours"]["client"]["p50_ms"]
        - out["noop"]["client"]["p50_ms"]
        - out["ours"]["decode_plus_encode"]["p50_ms"]
    )
    return out


def sdk_click_vs_by_id(base: str, n: int) -> dict:
    """The inference-sdk's `sam3_visual_segment` body (image inline, api_key in the body, no
    image_id) next to the same click by id, on a 12 MP JPEG."""
    height, width = SIZES["12 MP"]
    data = random_image(1, height, width, "JPEG", quality=33)
    setup = Timed(base)
    image_id = setup.post("/sam3/embed_image", dumps({"image": image_body(data)})).json()
    prompt = [{"points": [{"x": 2000, "y": 1500, "positive": True}]}]
    common = {"prompts": prompt, "format": "rle", "multimask_output": True}
    sdk_body = dumps({"image": image_body(data), "api_key": "unused", **common})
    by_id_body = dumps({"image_id": image_id["image_id"], **common})
    sdk, by_id = Timed(base), Timed(base)
    alternate(
        3, (sdk, "/sam3/visual_segment", sdk_body), (by_id, "/sam3/visual_segment", by_id_body)
    )
    sdk, by_id = Timed(base), Timed(base)
    alternate(
        n, (sdk, "/sam3/visual_segment", sdk_body), (by_id, "/sam3/visual_segment", by_id_body)
    )
    megabytes = len(data) / 1e6
    out = {
        "image_bytes": len(data),
        "body_bytes": len(sdk_body),
        "sdk_resends_image": sdk.report(),
        "by_id": by_id.report(),
    }
    extra = out["sdk_resends_image"]["client"]["p50_ms"] - out["by_id"]["client"]["p50_ms"]
    out["extra_p50_ms"] = extra
    out["ms_per_mb"] = extra / megabytes
    return out


def clicks_by_size(base: str, n: int) -> dict:
    out = {}
    for label, (height, width) in SIZES.items():
        timed = Timed(base)
        image_id = timed.post(
            "/sam3/embed_image", dumps({"image": image_body(smooth_image(2, height, width))})
        ).json()["image_id"]
        point = {"x": width / 3, "y": height / 2, "positive": True}
        click = dumps({"image_id": image_id, "prompts": {"points": [point]}, "format": "rle"})
        alternate(3, (timed, "/sam3/visual_segment", click))
        timed = Timed(base)
        alternate(n, (timed, "/sam3/visual_segment", click))
        out[label] = timed.report()
    out["ratio_12_to_0.3_MP"] = out["12 MP"]["client"]["p50_ms"] / out["0.3 MP"]["client"]["p50_ms"]
    return out


def embeds_vs_noop(base: str, n: int) -> dict:
    Timed(base).post("/noop/answer_with", b'{"image_id": "0123456789abcdef"}')
    ours, noop = Timed(base), Timed(base)
    for i in range(n):
        body = dumps({"image": image_body(random_image(1000 + i, 480, 640, "JPEG", quality=90))})
        ours.post("/sam3/embed_image", body)
        noop.post("/noop/click", body)
    return {"ours": ours.report(), "noop_same_body": noop.report()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    n = args.requests

    cluster = start_local_cluster(workers=0, head_cpus=2)
    try:
        base = cluster.url
        deploy_ours(base)
        serve.run(NoopIngress.bind(NoopReplica.bind()), name="noop", route_prefix="/noop")
        report = {
            "weights": "random (tiny model, 224 px input)",
            "click_by_id": click_by_id_vs_noop(base, n),
            "sdk_click": sdk_click_vs_by_id(base, max(10, n // 10)),
            "click_by_size_rle": clicks_by_size(base, max(10, n // 10)),
            "embed": embeds_vs_noop(base, min(n, 100)),
        }
    finally:
        cluster.shutdown()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(report, indent=2))
    print_report(report)


def print_report(report: dict) -> None:
    print(f"RANDOM weights, {report['weights']}")
    click = report["click_by_id"]
    print(
        f"click by id (640x480): ours p50 {click['ours']['client']['p50_ms']:.2f} ms "
        f"(p99 {click['ours']['client']['p99_ms']:.2f}), no-op two hops p50 "
        f"{click['noop']['client']['p50_ms']:.2f} ms (p99 {click['noop']['client']['p99_ms']:.2f})"
    )
    for stage, p in click["ours"]["stages"].items():
        print(f"  {stage:<8} p50 {p['p50_ms']:7.2f} ms  p99 {p['p99_ms']:7.2f} ms")
    print(f"  glue: click - no-op - (decode + encode) = {click['glue_p50_ms']:.2f} ms at p50")
    sdk = report["sdk_click"]
    print(
        f"inference-sdk click resending a {sdk['image_bytes'] / 1e6:.1f} MB 12 MP JPEG: p50 "
        f"{sdk['sdk_resends_image']['client']['p50_ms']:.1f} ms against "
        f"{sdk['by_id']['client']['p50_ms']:.1f} ms by id: {sdk['ms_per_mb']:.1f} ms per MB"
    )
    sizes = report["click_by_size_rle"]
    cells = ", ".join(f"{label} {sizes[label]['client']['p50_ms']:.1f} ms" for label in SIZES)
    print(f"click by id, RLE: {cells}; 12/0.3 MP {sizes['ratio_12_to_0.3_MP']:.1f}x")
    embed = report["embed"]
    print(
        f"embed 640x480: ours p50 {embed['ours']['client']['p50_ms']:.1f} ms, no-op same body "
        f"{embed['noop_same_body']['client']['p50_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
