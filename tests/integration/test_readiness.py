"""`GET /readyz` on the session's Ray cluster: ready once the segmenters are up and in the
ingress's ring, and ready all through a scale-out (a new replica, not yet routed to, does not
take a serving ingress out of a load balancer)."""

from __future__ import annotations

import threading

import pytest
import requests

from bench.harness import LocalCluster
from tests.integration.serving import deploy

pytestmark = pytest.mark.ray


def test_ready_after_deploy_and_through_a_scale_out(service: LocalCluster):
    deploy(service, 1)
    ready = requests.get(f"{service.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}, ready.text

    answers: list[tuple[int, str]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            response = requests.get(f"{service.url}/readyz", timeout=30)
            answers.append((response.status_code, response.text))
            done.wait(0.2)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        replicas = deploy(service, 2)  # returns once the ingress reaches both
    finally:
        done.set()
        poller.join()
    assert len(replicas) == 2
    assert answers and all(status == 200 for status, _ in answers), [
        a for a in answers if a[0] != 200
    ][:3]
    assert requests.get(f"{service.url}/readyz", timeout=30).status_code == 200
