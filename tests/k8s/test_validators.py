"""The validators reject what a cluster rejects: each case breaks the gpu overlay's rendered
RayService (or its claim) in one way, and the validators must name the fault."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.k8s.kuberay_rules import ray_service_errors
from tests.k8s.manifests import Document, json_patch, only, ray_service
from tests.k8s.validators import document_errors


def _mutate(path: str, value: Any, op: str = "replace") -> Callable[[Document], None]:
    return lambda service: json_patch(service, {"op": op, "path": path, "value": value})


GROUPS = "/spec/rayClusterConfig/workerGroupSpecs"
GPU_GROUP = f"{GROUPS}/1"
GPU_CONTAINER = f"{GPU_GROUP}/template/spec/containers/0"

# case -> (mutation of the gpu overlay's RayService, a message expected among the errors,
# whether only the CRD schema catches it).
BROKEN = {
    "misspelled field": (
        _mutate("/spec/rayClusterConfig/workerGroupSpec", [], op="add"),
        "Additional properties are not allowed ('workerGroupSpec' was unexpected)",
        True,
    ),
    "wrong type": (_mutate(f"{GPU_GROUP}/maxReplicas", "4"), "'4' is not of type 'integer'", True),
    "min above max": (
        _mutate(f"{GPU_GROUP}/minReplicas", 5),
        "has minReplicas 5 greater than maxReplicas 4",
        False,
    ),
    "replicas above max": (_mutate(f"{GPU_GROUP}/replicas", 9), "replicas 9 outside", False),
    "name not DNS-1035": (_mutate("/metadata/name", "sam3_serve"), "valid DNS1035 label", False),
    "name too long": (_mutate("/metadata/name", "s" * 48), "no more than 47 characters", False),
    "v2 without in-tree autoscaling": (
        _mutate("/spec/rayClusterConfig/enableInTreeAutoscaling", False),
        "needs enableInTreeAutoscaling: true",
        False,
    ),
    "worker group without container": (
        _mutate(f"{GPU_GROUP}/template/spec/containers", []),
        "workerGroupSpec should have at least one container",
        False,
    ),
    "duplicate group names": (
        _mutate(f"{GPU_GROUP}/groupName", "cpu-workers"),
        "worker group names must be unique",
        False,
    ),
    "restartPolicy with autoscaler v2": (
        _mutate(
            "/spec/rayClusterConfig/headGroupSpec/template/spec/restartPolicy", "Always", op="add"
        ),
        "restartPolicy for head should be Never",
        False,
    ),
    "num-cpus and group resources": (
        _mutate("/spec/rayClusterConfig/headGroupSpec/resources", {"CPU": "2"}, op="add"),
        "should not be set in both rayStartParams and Resources",
        False,
    ),
    "GPU request differs from limit": (
        _mutate(f"{GPU_CONTAINER}/resources/requests/nvidia.com~1gpu", 2),
        "extended resource's request must equal its limit",
        False,
    ),
    "CPU request above limit": (
        _mutate(f"{GPU_CONTAINER}/resources/requests/cpu", "8"),
        "request 8 exceeds limit 6",
        False,
    ),
    "mount of a missing volume": (
        _mutate(f"{GPU_CONTAINER}/volumeMounts/0/name", "model"),
        "names no volume of the pod",
        False,
    ),
    "port name too long": (
        _mutate(f"{GPU_CONTAINER}/ports/0/name", "serve-http-proxy"),
        "is not an IANA service name",
        False,
    ),
    "duplicate env in container": (
        _mutate(f"{GPU_CONTAINER}/env/-", {"name": "SAM3_DEVICE", "value": "cpu"}, op="add"),
        "duplicate entries for keys ['name']",
        True,
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_validators_reject_broken_ray_service(rendered, request, case):
    mutate, message, needs_crds = BROKEN[case]
    crds = request.getfixturevalue("crds") if needs_crds else None
    # Unbroken, it passes (test_rendered_manifests_*): any error comes from the mutation.
    service = copy.deepcopy(ray_service(rendered, "overlays/gpu"))
    mutate(service)
    errors = ray_service_errors(service, crds)
    assert any(message in error for error in errors), errors


def test_core_validation_rejects_a_broken_claim(rendered):
    claim = copy.deepcopy(only(rendered["overlays/gpu"], "PersistentVolumeClaim"))
    claim["spec"]["accesModes"] = claim["spec"].pop("accessModes")
    assert any("accesModes" in e for e in document_errors(claim, None))
