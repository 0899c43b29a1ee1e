"""Helpers of the Ray integration tests: deploying the app, images to send."""

from __future__ import annotations

from functools import partial
from typing import Any

from bench.harness import LocalCluster, Prometheus, app_config, deploy_and_wait
from bench.samples import image_body as encoded
from bench.samples import random_image
from deployments.config import APP_NAME as APP


def deploy(service: LocalCluster, replicas: int, **overrides: Any) -> set[str]:
    """Deploy (or update in place, as `serve deploy` does) and wait until every segmenter
    serves; returns their replica ids."""
    config = app_config(replicas, **overrides)
    return deploy_and_wait(config, {APP: replicas}, service.url, image_body(0))[APP]


def settled_total(service: LocalCluster, name: str) -> float:
    return Prometheus.settled(partial(service.metrics.total, name))


def image_bytes(seed: int) -> bytes:
    return random_image(seed)


def image_body(seed: int) -> dict[str, str]:
    return encoded(random_image(seed))


def click_prompt(*points: tuple[float, float]) -> dict:
    return {"prompts": [{"points": [{"x": x, "y": y, "positive": True} for x, y in points]}]}
