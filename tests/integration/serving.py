"""Helpers of the Ray integration tests: deploying the app, images to send."""

from __future__ import annotations

import base64
from functools import partial
from typing import Any

from bench.harness import LocalCluster, Prometheus, app_config, deploy_and_wait
from deployments.config import APP_NAME as APP
from tests.conftest import encode_image, random_pixels


def deploy(service: LocalCluster, replicas: int, **overrides: Any) -> set[str]:
    """Deploy (or update in place, as `serve deploy` does) and wait until every segmenter
    serves; returns their replica ids."""
    config = app_config(replicas, **overrides)
    return deploy_and_wait(config, {APP: replicas}, service.url, image_body(0))[APP]


def settled_total(service: LocalCluster, name: str) -> float:
    return Prometheus.settled(partial(service.metrics.total, name))


_IMAGES: dict[int, bytes] = {}


def image_bytes(seed: int) -> bytes:
    if seed not in _IMAGES:
        _IMAGES[seed] = encode_image(random_pixels(seed, 96, 128))
    return _IMAGES[seed]


def image_body(seed: int) -> dict[str, str]:
    return {"type": "base64", "value": base64.b64encode(image_bytes(seed)).decode()}


def click_prompt(*points: tuple[float, float]) -> dict:
    return {"prompts": [{"points": [{"x": x, "y": y, "positive": True} for x, y in points]}]}
