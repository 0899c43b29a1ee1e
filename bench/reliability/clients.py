"""The client side every scenario shares: deploying the app under test, and an annotation
tool's click loop with the outcomes it records."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from bench.harness import LocalCluster, app_config, deploy_and_wait
from bench.samples import click_body, image_body, random_image
from deployments.config import APP_NAME


def deploy(cluster: LocalCluster, replicas: int, **overrides: Any) -> set[str]:
    config = app_config(replicas, **overrides)
    probe = image_body(random_image(0))
    return deploy_and_wait(config, {APP_NAME: replicas}, cluster.url, probe)[APP_NAME]


@dataclass
class Outcome:
    """What a load loop saw: (seconds since start, status, replica, cache, code, retry)."""

    started: float = field(default_factory=time.monotonic)
    calls: list[tuple[float, int, str | None, str | None, str | None, str | None]] = field(
        default_factory=list
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: requests.Response) -> None:
        code = None
        if response.status_code != 200 and "json" in response.headers.get("content-type", ""):
            code = response.json().get("code")
        call = (
            time.monotonic() - self.started,
            response.status_code,
            response.headers.get("x-sam3-replica"),
            response.headers.get("x-sam3-embedding-cache"),
            code,
            response.headers.get("retry-after"),
        )
        with self.lock:
            self.calls.append(call)

    def by_status(self) -> dict[str, int]:
        return dict(Counter(str(call[1]) for call in self.calls))


def click_loop(
    url: str,
    images: dict[str, bytes],
    outcome: Outcome,
    stop: threading.Event,
    worker: int,
    max_requests: int,
) -> None:
    """An annotation tool: clicks by id; on 404 resends the image; on 503 honours
    Retry-After. Bounded by `stop` and `max_requests`."""
    session = requests.Session()
    ids = sorted(images)
    for n in range(max_requests):
        if stop.is_set():
            return
        image_id = ids[(worker + n) % len(ids)]
        body = click_body(image_id, [(10 + n % 50, 20 + worker)])
        response = session.post(f"{url}/sam3/visual_segment", json=body, timeout=60)
        outcome.record(response)
        if response.status_code == 404:
            body["image"] = image_body(images[image_id])
            outcome.record(session.post(f"{url}/sam3/visual_segment", json=body, timeout=60))
        elif response.status_code == 503:
            time.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))
