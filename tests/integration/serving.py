"""Helpers of the Ray integration tests: deploying the app, HTTP calls, Prometheus metrics."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from deployments.config import APP_NAME as APP
from deployments.config import deploy_config, load_config
from tests.conftest import encode_image, random_pixels

TINY_ENGINE = {"random_weights": "tiny", "max_hole_area": 0, "device": "cpu"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@dataclass
class Service:
    url: str
    metrics_ports: list[int]

    def post(self, path: str, body: dict, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=120, **kwargs)

    def settled_metric_total(self, name: str) -> float:
        """`metric_total` once it stops moving (replicas report every second)."""
        previous = self.metric_total(name)
        while True:
            time.sleep(2.5)
            current = self.metric_total(name)
            if current == previous:
                return current
            previous = current

    def metric_total(self, name: str) -> float:
        """Sum of a counter over every series on every node."""
        total = 0.0
        for port in self.metrics_ports:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name:
                        total += sample.value
        return total


def tiny_config(replicas: int, *, args: dict[str, Any] | None = None, segmenter=None):
    """serve_config.yaml's application with the tiny random model, fixed replica counts and
    fractional CPUs."""
    return load_config(
        args={"engine": TINY_ENGINE, "segmenter_cpus": 0.25, "ingress_cpus": 0.25, **(args or {})},
        deployments={
            "Segmenter": {"num_replicas": replicas, **(segmenter or {})},
            "Ingress": {"num_replicas": 1},
        },
    )


def deploy(service: Service, replicas: int, **overrides: Any) -> None:
    """Deploy (or update in place, as `serve deploy` does) the app from `serve_config`, and
    wait until `serve status` shows it RUNNING with `replicas` segmenters and the ingress's
    router reaches all of them."""
    deploy_config(tiny_config(replicas, **overrides))

    def running() -> bool:
        status = serve.status().applications.get(APP)
        if status is None or status.status != "RUNNING":
            return False
        states = status.deployments["Segmenter"].replica_states
        return states.get("RUNNING", 0) == replicas and sum(states.values()) == replicas

    wait_for(running, 300, f"{replicas} running segmenters")
    seen: set[str] = set()

    def routed_to_all() -> bool:
        for i in range(10):
            tag = f"{time.monotonic_ns()}-{i}"
            response = service.post(
                "/sam3/embed_image", {"image": image_body(0), "image_id": f"warm-up-{tag}"}
            )
            if response.status_code == 200:
                seen.add(response.headers["x-sam3-replica"])
        return len(seen) >= replicas

    wait_for(routed_to_all, 120, f"the router to reach {replicas} replicas")


_IMAGES: dict[int, bytes] = {}


def image_bytes(seed: int) -> bytes:
    if seed not in _IMAGES:
        _IMAGES[seed] = encode_image(random_pixels(seed, 96, 128))
    return _IMAGES[seed]


def image_body(seed: int) -> dict[str, str]:
    return {"type": "base64", "value": base64.b64encode(image_bytes(seed)).decode()}


def click_prompt(*points: tuple[float, float]) -> dict:
    return {"prompts": [{"points": [{"x": x, "y": y, "positive": True} for x, y in points]}]}
