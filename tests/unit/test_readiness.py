"""`GET /readyz`: when the service counts as ready (`deployments.readiness`), and the route."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from deployments.api import create_api
from deployments.readiness import SegmenterStatus, not_ready_reason
from deployments.settings import IngressSettings
from tests.unit.http_client import InProcessOwners


def status(state: str, running: int, message: str = "") -> SegmenterStatus:
    return SegmenterStatus(state, running, message)


class TestNotReadyReason:
    @pytest.mark.parametrize(
        ("found", "routed", "words"),
        [
            (None, 0, "not deployed yet"),
            (status("UPDATING", 0), 0, "no segmenter replica is running"),
            (status("UPDATING", 1), 1, "segmenters starting: 1 running"),
            (status("HEALTHY", 2), 0, "has not heard of a running segmenter"),
            (status("HEALTHY", 2), 1, "1 of 2 running segmenters are in the ingress's ring"),
            (
                status(
                    "DEPLOY_FAILED",
                    0,
                    "The deployment failed to start 3 times in a row. Error:\nTraceback ...\n"
                    "  File x\nWeightsError: SAM3_DEVICE=cuda but CUDA is not available\n",
                ),
                0,
                "DEPLOY_FAILED: WeightsError: SAM3_DEVICE=cuda but CUDA is not available",
            ),
        ],
    )
    def test_before_the_first_ready_answer(self, found, routed, words):
        reason = not_ready_reason(found, routed, ready_before=False)
        assert reason is not None and words in reason

    def test_ready_once_every_running_segmenter_is_in_the_ring(self):
        assert not_ready_reason(status("HEALTHY", 2), 2, ready_before=False) is None
        # A router without a ring (benchmarks' round robin): the controller's word alone.
        assert not_ready_reason(status("HEALTHY", 2), None, ready_before=False) is None

    @pytest.mark.parametrize(
        ("found", "routed"),
        [
            (status("UPSCALING", 3), 2),  # a new replica runs, the router has not heard yet
            (status("HEALTHY", 3), 2),  # the scale-out done, same moment
            (status("UPDATING", 2), 2),  # a config update in place
            (status("UNHEALTHY", 1), 1),  # one of two replicas failing its health checks
        ],
    )
    def test_a_ready_service_stays_ready_through_scale_events(self, found, routed):
        assert not_ready_reason(found, routed, ready_before=True) is None

    @pytest.mark.parametrize(
        ("found", "routed"),
        [(status("UNHEALTHY", 0), 0), (status("HEALTHY", 1), 0), (None, 1)],
    )
    def test_a_ready_service_is_not_ready_without_a_routed_segmenter(self, found, routed):
        assert not_ready_reason(found, routed, ready_before=True) is not None


class TestRoute:
    def client(self, engine, reasons: list[str | None]) -> TestClient:
        async def readiness() -> str | None:
            return reasons.pop(0)

        app = create_api(
            InProcessOwners(engine), IngressSettings(api_keys="k"), readiness=readiness
        )
        return TestClient(app, raise_server_exceptions=False)

    def test_503_with_the_reason_then_200(self, engine):
        api = self.client(engine, ["segmenters starting: 0 running", None])
        before = api.get("/readyz")  # no key: open like /healthz
        assert before.status_code == 503 and before.headers["Retry-After"] == "1"
        assert before.json() == {"message": "segmenters starting: 0 running", "code": "not_ready"}
        after = api.get("/readyz")
        assert after.status_code == 200 and after.json() == {"status": "ready"}

    def test_an_engine_in_process_is_always_ready(self, api):
        assert api.get("/readyz").json() == {"status": "ready"}

    def test_documented(self, api):
        responses = api.get("/openapi.json").json()["paths"]["/readyz"]["get"]["responses"]
        assert {"200", "503"} <= set(responses)
