"""The HTTP API without Ray, for the unit tests: the tiny engine in-process behind FastAPI's
test client, and the images and prompts they send."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

from deployments.api import create_api
from deployments.operations import Operation, Reply
from deployments.owners import LocalOwners, ServiceUnavailableError
from deployments.settings import IngressSettings
from sam3_core import Segmenter, SegmentRequest
from sam3_core.calls import ImageRequest
from tests.conftest import encode_image, random_pixels


class InProcessOwners(LocalOwners):
    """The engine in-process as the only "replica", recording segment requests."""

    def __init__(self, engine: Segmenter) -> None:
        super().__init__(engine)
        self.calls: list[SegmentRequest] = []
        self.unavailable = False

    async def call(self, operation: Operation, request: ImageRequest) -> Reply:
        if self.unavailable:
            raise ServiceUnavailableError("owner restarting", retry_after_s=2.2)
        if isinstance(request, SegmentRequest):
            self.calls.append(request)
        return await super().call(operation, request)


def make_client(engine: Segmenter, **settings) -> tuple[TestClient, InProcessOwners]:
    backend = InProcessOwners(engine)
    app = create_api(backend, IngressSettings(**settings))
    return TestClient(app, raise_server_exceptions=False), backend


PNG = encode_image(random_pixels(3, 90, 120))
B64 = base64.b64encode(PNG).decode()
OTHER_B64 = base64.b64encode(encode_image(random_pixels(4, 90, 120))).decode()
CLICK = {"points": [{"x": 30, "y": 40, "positive": True}]}
