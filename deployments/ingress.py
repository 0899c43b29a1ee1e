"""The ingress deployment (CPU): serves the HTTP API and sends each request to the segmenter
replica that owns its image (`deployments.owners.RayOwners`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.api import create_api
from deployments.metrics import StageMetrics
from deployments.owners import RayOwners
from deployments.readiness import Readiness
from deployments.settings import IngressSettings, SegmenterSettings
from deployments.video_owners import RayVideoOwners


@serve.ingress()
class Ingress:
    """Thin: the API itself is `deployments.api.create_api`."""

    def __init__(
        self, segmenter: DeploymentHandle, settings: dict[str, Any], affinity: bool = True
    ) -> None:
        self.settings = IngressSettings(**settings)
        self.owners = RayOwners(segmenter, digest_first=affinity)
        # A request for a moving video session is sent again as long as a replica waits
        # for one (`deployments.video_handoff`).
        moving_s = SegmenterSettings(**settings).handoff_timeout_seconds
        self.video_owners = RayVideoOwners(segmenter, moving_s=moving_s)
        self.metrics = StageMetrics()
        # Only the consistent-hash router keeps a ring (`affinity`).
        self.readiness = Readiness(segmenter, keeps_ring=affinity)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(
            self.owners,
            self.settings,
            observe=self.metrics.observe,
            readiness=self.readiness,
            video_owners=self.video_owners,
        )
