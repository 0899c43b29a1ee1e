"""Clicks by id, resends and new bytes for ids *during* scale events that Serve's autoscaler
makes (a low `target_ongoing_requests`: the clients' load takes the segmenter from 1 to 3
replicas, and back to 1 when most of them stop), with `load_factor` off and on. Every request
goes into one history (`tests/unit/handoff_history.py`, the simulation's), checked as the
simulation checks it: no stale answer, no 5xx, no by-id 404 (no replica is killed and the
caches hold every image, so each id is always held somewhere), no image embedded again, no
request slower than `SLOWEST_S`.

Tiny random-weights model: masks are meaningless but deterministic, so an answer's masks
name the picture it came from (each picture's masks, probed first, differ)."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import threading
import time
from typing import Any

import pytest
import requests
from ray import serve

from bench.harness import TINY_ENGINE, LocalCluster, deploy_and_wait, wait_for
from deployments.config import APP_NAME, load_config
from deployments.ring import RINGS, Ring, deployment_name
from tests.integration.serving import click_prompt, image_body
from tests.unit.handoff_history import Checker, Op

pytestmark = pytest.mark.ray

CLIENTS = 8
IDS_PER_CLIENT = 3
PICTURES = (900, 901, 902, 903)  # image seeds: each id holds one of them at a time
# Longest a request may take during the scale events: far under the hand-off timeout (30 s),
# above a tiny model's embed on a busy 2-core machine with three replicas starting.
SLOWEST_S = 15.0
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 1,
    "downscale_delay_s": 2,
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,
}


def config(load_factor: float | None) -> Any:
    return load_config(
        args={
            "engine": TINY_ENGINE,
            "segmenter_cpus": 0.25,
            "ingress_cpus": 0.25,
            "load_factor": load_factor,
        },
        deployments={
            "Segmenter": {"autoscaling_config": AUTOSCALING},
            "Ingress": {"num_replicas": 1},
        },
    )


def segment(service: LocalCluster, image_id: str, seed: int | None) -> requests.Response:
    body: dict[str, Any] = {"image_id": image_id, "prompts": click_prompt((11, 7))}
    if seed is not None:
        body["image"] = image_body(seed)
    return requests.post(service.url + "/sam3/visual_segment", json=body, timeout=120)


def fingerprint(response: requests.Response) -> str:
    return json.dumps([p["masks"] for p in response.json()["predictions"]], sort_keys=True)


class Client:
    """Works on its own ids, one request at a time: mostly clicks by id, sometimes the same
    bytes again, sometimes new bytes (another picture)."""

    def __init__(self, n: int, service: LocalCluster, history: Recorder) -> None:
        self.rng = random.Random(n)
        self.service = service
        self.history = history
        self.ids = [f"churn-{history.tag}-{n}-{i}" for i in range(IDS_PER_CLIENT)]
        self.holds = {image_id: PICTURES[0] for image_id in self.ids}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            image_id = self.rng.choice(self.ids)
            kind = self.rng.choices(["click", "resend", "new"], [7, 2, 1])[0]
            if kind == "new":
                seed = self.rng.choice([s for s in PICTURES if s != self.holds[image_id]])
            else:
                seed = self.holds[image_id] if kind == "resend" else None
            answered = self.history.request(image_id, seed, resend=kind == "resend")
            if answered and seed is not None:
                self.holds[image_id] = seed


class Recorder:
    """The history of one run, and what the checker cannot see in it (statuses, misses)."""

    def __init__(self, tag: str, service: LocalCluster, pictures: dict[str, int]) -> None:
        self.tag = tag
        self.service = service
        self.pictures = pictures  # a picture's masks -> its seed
        self.started = time.monotonic()
        self.checker = Checker(lossy=False)
        self.lock = threading.Lock()
        self.statuses: dict[int, int] = {}
        self.re_embedded: list[str] = []
        self.slowest = 0.0

    def request(self, image_id: str, seed: int | None, resend: bool = False) -> bool:
        """One request (then, after a by-id 404, the image again, as the page does);
        returns whether it was answered."""
        op = Op(image_id, time.monotonic() - self.started, None if seed is None else str(seed))
        with self.lock:
            self.checker.ops.append(op)
        response = segment(self.service, image_id, seed)
        now = time.monotonic() - self.started
        with self.lock:
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            self.slowest = max(self.slowest, now - op.sent)
            if response.status_code != 200:
                op.outcome = str(response.status_code)
                if response.status_code >= 500 or seed is not None:
                    self.checker.violations.append(f"{image_id}: {response.status_code}")
                else:
                    self.checker.violations.append(f"by-id 404 for {image_id} at {now:.2f}")
                return False
            answer = self.pictures.get(fingerprint(response))
            op.acked, op.answer, op.outcome = now, str(answer), "ok"
            if answer is None:
                self.checker.violations.append(f"{image_id}: masks of no picture sent")
            elif (stale := self.checker.stale(op)) is not None:
                self.checker.violations.append(f"stale answer: {stale}")
            if resend and response.headers["x-sam3-embedding-cache"] == "miss":
                self.re_embedded.append(f"{image_id} at {now:.2f}")
        return True


@pytest.mark.parametrize("load_factor", [None, 1.25], ids=["strict", "load_factor"])
def test_clicks_resends_and_new_bytes_during_autoscaler_scale_events(
    service: LocalCluster, load_factor: float | None
):
    deploy_and_wait(config(load_factor), {APP_NAME: 1}, service.url, image_body(0))
    rings: list[tuple[float, Ring]] = []
    started = time.monotonic()
    feed = deployment_name(APP_NAME, "Segmenter")
    hear = lambda ring: rings.append((time.monotonic() - started, ring))  # noqa: E731
    RINGS.subscribe(feed, hear)
    with contextlib.suppress(RuntimeError):  # this process's router runs already
        serve.get_deployment_handle("Segmenter", APP_NAME)._init()
    pictures = {}
    for seed in PICTURES:
        pictures[fingerprint(segment(service, f"probe-{seed}", seed))] = seed
    assert len(pictures) == len(PICTURES), "the pictures' masks must differ"
    tag = "lf" if load_factor else "strict"
    history = Recorder(tag, service, pictures)
    clients = [Client(n, service, history) for n in range(CLIENTS)]
    for client in clients:  # every id embedded before the load starts
        for image_id in client.ids:
            assert history.request(image_id, PICTURES[0])
    stops = [threading.Event() for _ in clients]
    threads = [
        threading.Thread(target=c.run, args=(s,)) for c, s in zip(clients, stops, strict=True)
    ]

    def replicas() -> int:
        return len(rings[-1][1].replicas) if rings else 0

    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: replicas() >= AUTOSCALING["max_replicas"], 240, "the scale-out")
        time.sleep(2)
        for stop in stops[1:]:  # one client keeps working through the scale-in
            stop.set()
        wait_for(lambda: replicas() == 1, 240, "the scale-in")
        time.sleep(1)
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join()
        RINGS.unsubscribe(feed, hear)
    for client in clients:  # each id, once more by id: the latest picture, from its owner
        for image_id in client.ids:
            history.request(image_id, None)
    counts = [len(ring.replicas) for _, ring in rings]
    ops = history.checker.ops
    print(
        f"{tag}: {len(ops)} requests ({sum(o.write is None for o in ops)} by id, "
        f"{sum(o.write is not None for o in ops)} with bytes), replicas {counts}, "
        f"statuses {history.statuses}, slowest {history.slowest:.2f} s, "
        f"re-embedded {len(history.re_embedded)}, violations {len(history.checker.violations)}"
    )
    assert max(counts) == AUTOSCALING["max_replicas"] and counts[-1] == 1, counts
    assert [n for n, _ in itertools.groupby(counts)] != [1], "no scale event"
    assert history.checker.violations == [], history.checker.violations[:5]
    assert history.re_embedded == [], history.re_embedded
    assert history.slowest < SLOWEST_S
