"""Whether the service is ready to segment (`GET /readyz`): the segmenter replicas the
config asks for are up, and the ingress routes over them (they are in its ring).

`GET /healthz` answers as soon as the ingress runs; `/readyz` waits for the segmenters too.
Ray Serve's controller knows whether the segmenter deployment reached its replica count
(`serve status`: `HEALTHY`); the ingress's own request router knows which replicas it routes
to (`deployments.ring.RINGS`). Ready the first time both agree; after that, ready while at
least one segmenter is up and routed to, so that a scale event or one failing replica does
not take a serving ingress out of a load balancer (its requests get 503 + Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.ring import RINGS, Ring, deployment_name

# Ray Serve's deployment statuses (`ray.serve._private.common.DeploymentStatus`) once the
# deployment's replica count has been reached; UPDATING is a first deploy or an update.
_REACHED = frozenset({"HEALTHY", "UPSCALING", "DOWNSCALING"})
_FAILED = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})


@dataclass(frozen=True)
class SegmenterStatus:
    """The segmenter deployment as Ray Serve's controller reports it."""

    status: str
    running: int
    message: str = ""


def not_ready_reason(
    status: SegmenterStatus | None, routed: int | None, ready_before: bool
) -> str | None:
    """Why the service is not ready, or None when it is.

    Args:
        status: the segmenter deployment's, None when Serve does not know it (yet).
        routed: segmenter replicas in the ingress's ring; None where the router keeps no
            ring (the benchmarks' `power_of_two` and `round_robin`).
        ready_before: whether this ingress has been ready already.
    """
    if status is None:
        return "the segmenter deployment is not deployed yet"
    if status.status in _FAILED and status.running == 0:
        # Serve's message ends with the replica's exception, after its traceback.
        lines = [line for line in status.message.splitlines() if line.strip()]
        detail = f": {lines[-1].strip()[:500]}" if lines else ""
        return f"the segmenter deployment is {status.status}{detail}"
    if status.running == 0:
        return f"no segmenter replica is running yet (the deployment is {status.status})"
    if not ready_before and status.status not in _REACHED:
        return (
            f"segmenters starting: {status.running} running, the deployment is "
            f"{status.status} (serve status shows each replica)"
        )
    if routed is None:
        return None
    if routed == 0:
        return "the ingress's router has not heard of a running segmenter yet"
    if not ready_before and routed < status.running:
        return f"{routed} of {status.running} running segmenters are in the ingress's ring"
    return None


class Readiness:
    """`/readyz` of an ingress replica, from its handle to the segmenter deployment."""

    def __init__(self, segmenter: DeploymentHandle, keeps_ring: bool) -> None:
        self.app_name = segmenter.app_name
        self.deployment = segmenter.deployment_name
        self._routed: int | None = 0 if keeps_ring else None
        self._ready_before = False
        if keeps_ring:
            if not segmenter.is_initialized:
                # Its router starts now and publishes the ring before the first request.
                segmenter._init()
            RINGS.subscribe(deployment_name(self.app_name, self.deployment), self._on_ring)

    def _on_ring(self, ring: Ring) -> None:
        self._routed = len(ring.replicas)

    def _status(self) -> SegmenterStatus | None:
        app = serve.status().applications.get(self.app_name)
        overview = None if app is None else app.deployments.get(self.deployment)
        if overview is None:
            return None
        running = sum(
            count for state, count in overview.replica_states.items() if _name(state) == "RUNNING"
        )
        return SegmenterStatus(_name(overview.status), running, overview.message)

    async def __call__(self) -> str | None:
        try:
            status = await anyio.to_thread.run_sync(self._status)  # asks Serve's controller
        except Exception as error:  # a controller restarting: not ready, not a 500
            return f"Ray Serve's controller did not answer: {type(error).__name__}: {error}"
        reason = not_ready_reason(status, self._routed, self._ready_before)
        self._ready_before = self._ready_before or reason is None
        return reason


def _name(state: object) -> str:
    """A Serve status enum's value (`str()` of a str enum is "Class.MEMBER" on 3.11)."""
    return str(getattr(state, "value", state))
