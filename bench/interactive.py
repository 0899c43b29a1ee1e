"""Interactive annotation workload against the real service, request routers side by side.

    python -m bench.interactive --quick     # < 3 min on 2 cores (CI runs it)
    python -m bench.interactive             # R = 3 and 4, 12 annotators x 6 clicks (~25 min)

U simulated annotators work through images as an annotation tool does: embed, then k clicks
where each click adds a point to the previous ones and reuses the logits cache; some clicks
send only the `image_id`, some resend the image (as `inference-sdk` does); a 404
`image_not_cached` makes the tool resend the image. Think time separates clicks; a share of
annotators come back to an earlier image. Everything is seeded.

The same workload runs on local Ray, over HTTP through Ray's proxy, with R segmenter
replicas under three request routers, only the router differing: consistent hashing on
`image_id` (ours), Ray Serve's default power-of-two-choices, and round robin. A last run of
ours adds a replica mid-run and later removes one. Weights are random ("narrow": SAM3's
1008 px input with narrow widths, whose embed:decode cost ratio on this CPU is close to
SAM3's on a GPU; the ratio is measured and printed).

Writes bench/results/interactive[-quick].json and two PNG plots.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import platform
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray
import requests
import torch
from PIL import Image
from ray import serve
from ray.serve.schema import ServeDeploySchema

from bench.harness import Prometheus, deploy_and_wait, running, start_local_cluster
from deployments.config import APP_NAME, deploy_config, load_config
from sam3_core.architecture import NARROW
from sam3_core.model import InteractiveSam3

RESULTS = Path(__file__).parent / "results"
ROUTERS = ("consistent_hash", "power_of_two", "round_robin")
ENGINE = {"random_weights": "narrow", "max_hole_area": 0, "device": "cpu"}
HEIGHT, WIDTH = 480, 640


@dataclass(frozen=True)
class Workload:
    annotators: int
    images_per_annotator: int
    clicks: int
    think_s: float
    id_only_share: float
    revisit_share: float
    seed: int = 0


QUICK = Workload(
    annotators=4,
    images_per_annotator=2,
    clicks=3,
    think_s=0.1,
    id_only_share=0.5,
    revisit_share=0.5,
)
FULL = Workload(
    annotators=12,
    images_per_annotator=3,
    clicks=6,
    think_s=0.5,
    id_only_share=0.5,
    revisit_share=0.25,
)


# ---------------------------------------------------------------- workload


def image_bytes(seed: int) -> bytes:
    """A smooth random picture (blobs of colour), 640x480 JPEG."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((WIDTH, HEIGHT), Image.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@dataclass
class Event:
    t: float
    latency_s: float
    kind: str  # embed | click
    status: int
    replica: str | None
    embedding_cache: str | None
    logits_cache: str | None
    image: str
    annotator: int


@dataclass
class Recorder:
    started: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(
        self, session: requests.Session, url: str, body: dict, kind: str, image: str, annotator: int
    ) -> requests.Response:
        sent = time.monotonic()
        try:
            response = session.post(url, json=body, timeout=300)
        except requests.ConnectionError:
            # Status 0: the connection broke (e.g. a proxy hiccup during a scale event).
            response = requests.Response()
            response.status_code = 0
        event = Event(
            t=sent - self.started,
            latency_s=time.monotonic() - sent,
            kind=kind,
            status=response.status_code,
            replica=response.headers.get("x-sam3-replica"),
            embedding_cache=response.headers.get("x-sam3-embedding-cache"),
            logits_cache=response.headers.get("x-sam3-logits-cache"),
            image=image,
            annotator=annotator,
        )
        with self.lock:
            self.events.append(event)
        return response


class Annotator:
    """One person clicking through images with an annotation tool."""

    def __init__(
        self, index: int, workload: Workload, base_url: str, recorder: Recorder, run_tag: str
    ) -> None:
        self.index = index
        self.workload = workload
        self.url = base_url
        self.recorder = recorder
        self.rng = random.Random(workload.seed * 10_000 + index)
        self.session = requests.Session()
        self.points: dict[str, list[dict]] = defaultdict(list)
        self.tag = run_tag
        self.images: dict[str, int] = {}

    def next_image(self, j: int) -> str:
        image_id = f"{self.tag}-a{self.index}-i{j}"
        self.images[image_id] = image_seed(self.workload.seed, self.index, j)
        return image_id

    def image_body(self, image_id: str) -> dict:
        return {"type": "base64", "value": encoded(self.images[image_id])}

    def post(self, path: str, body: dict, kind: str, image_id: str) -> requests.Response:
        for _ in range(5):
            response = self.recorder.post(
                self.session, self.url + path, body, kind, image_id, self.index
            )
            if response.status_code not in (0, 503):
                return response
            time.sleep(float(response.headers.get("retry-after", 1)))
        return response

    def click(self, image_id: str, send_image: bool) -> None:
        points = self.points[image_id]
        points.append(
            {
                "x": self.rng.uniform(0, WIDTH),
                "y": self.rng.uniform(0, HEIGHT),
                "positive": self.rng.random() < 0.8,
            }
        )
        body = {
            "image_id": image_id,
            "prompts": {"prompts": [{"points": list(points)}]},
            "format": "rle",
            "save_logits_to_cache": True,
            "load_logits_from_cache": len(points) > 1,
        }
        if send_image:
            body["image"] = self.image_body(image_id)
        response = self.post("/sam3/visual_segment", body, "click", image_id)
        if response.status_code == 404:  # the tool's recovery: send the image again
            body["image"] = self.image_body(image_id)
            self.post("/sam3/visual_segment", body, "click", image_id)

    def work(self, image_id: str, clicks: int, embed_first: bool) -> None:
        if embed_first:
            body = {"image": self.image_body(image_id), "image_id": image_id}
            self.post("/sam3/embed_image", body, "embed", image_id)
        for _ in range(clicks):
            time.sleep(self.rng.expovariate(1 / self.workload.think_s))
            self.click(image_id, send_image=self.rng.random() >= self.workload.id_only_share)

    def run(self, stop: threading.Event | None = None) -> None:
        """Work through `images_per_annotator` images or, given `stop`, until it is set."""
        done: list[str] = []
        j = 0
        while (stop is None and j < self.workload.images_per_annotator) or (
            stop is not None and not stop.is_set()
        ):
            image_id = self.next_image(j)
            j += 1
            self.work(image_id, self.workload.clicks, embed_first=True)
            done.append(image_id)
            if len(done) > 1 and self.rng.random() < self.workload.revisit_share:
                earlier = self.rng.choice(done[:-1])
                self.work(earlier, max(2, self.workload.clicks // 2), embed_first=False)


def image_seed(seed: int, annotator: int, image: int) -> int:
    return seed * 1_000_000 + annotator * 1000 + image


_ENCODED: dict[int, str] = {}


def encoded(seed: int) -> str:
    if seed not in _ENCODED:
        _ENCODED[seed] = base64.b64encode(image_bytes(seed)).decode()
    return _ENCODED[seed]


# ---------------------------------------------------------------- cluster


class Metrics:
    """Scrapes Ray's Prometheus endpoint; samples cache bytes per replica every second."""

    def __init__(self, prometheus: Prometheus) -> None:
        self.samples = prometheus.samples
        self.peak_bytes: dict[str, float] = defaultdict(float)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def totals(self) -> dict[str, dict[str, float]]:
        """Server counters by application."""
        totals: dict[str, dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(SERVER_COUNTERS, 0.0)
        )
        names = {name: key for key, name in SERVER_COUNTERS.items()}
        for name, labels, value in self.samples():
            if name in names:
                totals[labels.get("application", "?")][names[name]] += value
        return dict(totals)

    def settled_totals(self) -> dict[str, dict[str, float]]:
        return Prometheus.settled(self.totals)

    def start(self, app: str) -> None:
        """Sample `app`'s cache bytes per replica, above each replica's level at the start."""
        self.app = app
        self.baseline = {
            self._replica(labels): value
            for name, labels, value in self.samples()
            if name == "ray_sam3_embedding_cache_bytes" and labels.get("application") == app
        }
        self.peak_bytes = defaultdict(float)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return dict(self.peak_bytes)

    @staticmethod
    def _replica(labels: dict[str, str]) -> str:
        return labels.get("replica", "?").split("#")[-1]

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            for name, labels, value in self.samples():
                if (
                    name == "ray_sam3_embedding_cache_bytes"
                    and labels.get("application") == self.app
                ):
                    replica = self._replica(labels)
                    added = value - self.baseline.get(replica, 0.0)
                    self.peak_bytes[replica] = max(self.peak_bytes[replica], added)


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


# Segmenter replicas each app's ingress was seen to reach, by app name.
REPLICAS: dict[str, set[str]] = {}


def deploy(replicas: dict[str, int], base_url: str) -> None:
    """Deploy one app per router, replacing whatever runs, and wait until each serves."""
    for name in list(serve.status().applications):
        serve.delete(name)
    reached = deploy_and_wait(
        apps_config(replicas),
        {app_name(router): count for router, count in replicas.items()},
        base_url,
        {"type": "base64", "value": encoded(1)},
    )
    REPLICAS.update(reached)


# ---------------------------------------------------------------- one run


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "n": 0}
    ms = np.array(values) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "n": len(values),
    }


def run_workload(
    workload: Workload,
    base_url: str,
    tag: str,
    recorder: Recorder | None = None,
    stop: threading.Event | None = None,
) -> Recorder:
    """All annotators at once, each in its own thread."""
    recorder = recorder or Recorder()
    annotators = [
        Annotator(i, workload, base_url, recorder, tag) for i in range(workload.annotators)
    ]
    threads = [threading.Thread(target=a.run, args=(stop,)) for a in annotators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return recorder


def summarise(
    router: str,
    replicas: int,
    workload: Workload,
    recorder: Recorder,
    server: dict[str, float] | None,
    peak_bytes: dict[str, float],
) -> dict:
    events = recorder.events
    ok = [e for e in events if e.status == 200]
    embeds_computed = sum(1 for e in ok if e.embedding_cache == "miss")
    hits = sum(1 for e in ok if e.embedding_cache == "hit")
    logits = [e.logits_cache for e in ok if e.logits_cache]
    unique = len({e.image for e in events})
    duration = max(e.t + e.latency_s for e in events)
    return {
        "router": router,
        "replicas": replicas,
        "annotators": workload.annotators,
        "clicks_per_image": workload.clicks,
        "unique_images": unique,
        "requests": len(events),
        "embeddings_computed": embeds_computed,
        # From the replicas' own counters (misses, less the 404s that are misses too).
        "embeddings_computed_server": (
            None if server is None else server["misses"] - server["not_cached"]
        ),
        "embeddings_per_unique_image": embeds_computed / unique,
        "embedding_cache_hit_rate": hits / max(1, hits + embeds_computed),
        "logits_cache_hit_rate": logits.count("hit") / max(1, len(logits)),
        "latency": {
            "click": percentiles([e.latency_s for e in ok if e.kind == "click"]),
            "embed": percentiles([e.latency_s for e in ok if e.kind == "embed"]),
        },
        "throughput_rps": len(events) / duration,
        "duration_s": duration,
        "errors_by_status": dict(Counter(str(e.status) for e in events if e.status != 200)),
        "peak_cache_bytes_per_replica": peak_bytes,
        "images_embedded_beyond_owner_changes": embedded_beyond_owner_changes(ok),
    }


def embedded_beyond_owner_changes(ok: list[Event]) -> int:
    """Images embedded more often than once per stint with an owner replica: 0 means every
    embedding after the first was caused by the image changing replica."""
    owners: dict[str, list[str]] = defaultdict(list)
    misses: Counter[str] = Counter()
    for e in sorted(ok, key=lambda e: e.t):
        if not owners[e.image] or owners[e.image][-1] != e.replica:
            owners[e.image].append(e.replica)
        misses[e.image] += e.embedding_cache == "miss"
    return sum(1 for image, count in misses.items() if count > len(owners[image]))


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
    print_row(report)
    return report


SERVER_COUNTERS = {
    "misses": "ray_sam3_embedding_cache_misses_total",
    "hits": "ray_sam3_embedding_cache_hits_total",
}


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


def owner_change_times(events: list[Event]) -> list[float]:
    """When an image was first served by a replica other than its previous one."""
    last: dict[str, str] = {}
    times = []
    for e in sorted(events, key=lambda e: e.t):
        if e.status != 200:
            continue
        if e.image in last and last[e.image] != e.replica:
            times.append(e.t)
        last[e.image] = e.replica
    return times


def moved_images(events: list[Event], at: float, before: int, after: int) -> dict:
    """Images served both before and after a scale event whose owner changed, and of those
    the ones embedded again on the new owner; expected share 1/max(before, after)."""
    owners_before: dict[str, str] = {}
    owners_after: dict[str, str] = {}
    missed_after: set[str] = set()
    for e in sorted(events, key=lambda e: e.t):
        if e.status != 200:
            continue
        if e.t < at:
            owners_before[e.image] = e.replica
        else:
            owners_after.setdefault(e.image, e.replica)
            if e.embedding_cache == "miss":
                missed_after.add(e.image)
    live = [image for image in owners_after if image in owners_before]
    moved = [image for image in live if owners_after[image] != owners_before[image]]
    return {
        "live_images": len(live),
        "moved": len(moved),
        "re_embedded": len([image for image in moved if image in missed_after]),
        "expected_moved": len(live) / max(before, after),
    }


# ---------------------------------------------------------------- model cost


def cost_ratio() -> dict[str, float]:
    """Embed and decode time of the benchmark's model on one CPU thread, as in a replica."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = InteractiveSam3(NARROW, max_hole_area=0).eval()
    pixels = np.asarray(Image.open(io.BytesIO(image_bytes(0))).convert("RGB"))
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
    embedding = model.encode(image)
    started = time.perf_counter()
    for _ in range(3):
        embedding = model.encode(image)
    embed = (time.perf_counter() - started) / 3
    coords, labels = np.array([[[320.0, 240.0]]]), np.array([[1]])
    model.decode(embedding, point_coords=coords, point_labels=labels)
    started = time.perf_counter()
    for _ in range(20):
        model.decode(embedding, point_coords=coords, point_labels=labels)
    decode = (time.perf_counter() - started) / 20
    torch.set_num_threads(threads)
    return {"embed_ms": embed * 1000, "decode_ms": decode * 1000, "ratio": embed / decode}


# ---------------------------------------------------------------- output


def print_row(r: dict) -> None:
    click, embed = r["latency"]["click"], r["latency"]["embed"]
    print(
        f"R={r['replicas']} {r['router']:<16} embeds {r['embeddings_computed']:>4} "
        f"({r['embeddings_per_unique_image']:.2f}/image) hit {r['embedding_cache_hit_rate']:.2f} "
        f"logits hit {r['logits_cache_hit_rate']:.2f} | click p50/p95/p99 "
        f"{click['p50_ms']:.0f}/{click['p95_ms']:.0f}/{click['p99_ms']:.0f} ms | embed p50 "
        f"{(embed['p50_ms'] or 0):.0f} ms | {r['throughput_rps']:.1f} req/s | errors "
        f"{r['errors_by_status']}",
        flush=True,
    )


def plot(report: dict, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    runs = report["runs"]
    counts = sorted({r["replicas"] for r in runs})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(ROUTERS)
    for i, router in enumerate(ROUTERS):
        values = [
            next(
                (
                    r["embeddings_per_unique_image"]
                    for r in runs
                    if r["router"] == router and r["replicas"] == n
                ),
                0,
            )
            for n in counts
        ]
        ax.bar(np.arange(len(counts)) + i * width, values, width, label=router)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(np.arange(len(counts)) + width, [f"R = {n}" for n in counts])
    ax.set_ylabel("embeddings computed per unique image")
    ax.set_title("Embeddings per image by router (1.00 is ideal)")
    ax.legend()
    fig.tight_layout()
    path = RESULTS / f"{stem}-embeddings.png"
    fig.savefig(path, dpi=120)
    paths.append(str(path.relative_to(RESULTS.parent.parent)))
    plt.close(fig)

    scale = report["scale"]
    timeline = scale["timeline"]
    fig, ax = plt.subplots(figsize=(9, 4))
    for kind, colour in (("click", "tab:blue"), ("embed", "tab:orange")):
        points = [(e["t"], e["latency_ms"]) for e in timeline if e["kind"] == kind]
        if points:
            ax.scatter(*zip(*points, strict=True), s=6, alpha=0.5, color=colour, label=kind)
    clicks = sorted((e["t"], e["latency_ms"]) for e in timeline if e["kind"] == "click")
    if clicks:
        edges = np.arange(0, clicks[-1][0] + 2, 2.0)
        centres, medians = [], []
        for lo, hi in itertools.pairwise(edges):
            window = [ms for t, ms in clicks if lo <= t < hi]
            if window:
                centres.append((lo + hi) / 2)
                medians.append(np.median(window))
        ax.plot(centres, medians, color="black", label="click p50 (2 s windows)")
    for event in scale["scale_events"]:
        ax.axvline(event["t"], color="red", linestyle="--")
        ax.text(
            event["t"], ax.get_ylim()[1] * 0.9, f" -> {event['replicas']} replicas", color="red"
        )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Ours (consistent hashing) through a scale-out and a scale-in")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = RESULTS / f"{stem}-scale-latency.png"
    fig.savefig(path, dpi=120)
    paths.append(str(path.relative_to(RESULTS.parent.parent)))
    plt.close(fig)
    return paths


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    base_url = cluster.url
    metrics = Metrics(cluster.metrics)
    started = time.monotonic()
    try:
        runs = []
        for replicas in replica_counts:
            phase = time.monotonic()
            deploy({router: replicas for router in args.routers}, base_url)
            print(
                f"deployed {len(args.routers)} apps x {replicas} replicas in "
                f"{time.monotonic() - phase:.0f} s",
                flush=True,
            )
            baselines = metrics.settled_totals()
            for router in args.routers:
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
    report["plots"] = plot(report, stem)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    print(
        f"wrote bench/results/{stem}.json and {', '.join(report['plots'])} "
        f"in {report['wall_seconds']:.0f} s"
    )
    return report


if __name__ == "__main__":
    main()
