"""What a cluster with KubeRay checks of a RayService before running it: KubeRay's CRD
schemas (read from ../shared/kuberay, strict as the API server is), the checks of its webhook,
and the Kubernetes rules of the pod templates inside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.k8s.kubernetes_rules import DNS_1035_LABEL, metadata_errors, pod_template_errors
from tests.k8s.manifests import RAY_CONTAINER_INDEX, Document, env_of, groups

# KubeRay: 63 - len("-serve-svc") for the RayCluster, minus the 6-character suffix it appends.
MAX_RAY_SERVICE_NAME = 47
MAX_RAY_CLUSTER_NAME = 53


def _closed(schema: Any) -> Any:
    """The schema with unknown fields rejected where the API server (kubectl's default
    strict field validation) rejects them: objects with properties, unless they preserve
    unknown fields."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = _closed(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [_closed(s) for s in schema[key]]
    return schema


def _list_type_errors(schema: Any, value: Any, path: str) -> list[str]:
    """`x-kubernetes-list-type: map|set`: the API server rejects duplicate keys or items."""
    if not isinstance(schema, dict):
        return []
    errors = []
    if isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen = [tuple(item.get(k) for k in keys) for item in value]
            if len(set(seen)) != len(seen):
                errors.append(f"{path}: duplicate entries for keys {keys}")
        elif list_type == "set" and len({json.dumps(v, sort_keys=True) for v in value}) != len(
            value
        ):
            errors.append(f"{path}: duplicate items in a set")
        for i, item in enumerate(value):
            errors += _list_type_errors(schema.get("items"), item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            errors += _list_type_errors(sub, item, f"{path}.{key}")
    return errors


class CrdValidator:
    """A KubeRay CRD's `openAPIV3Schema` (served version v1), strict as the API server is.

    Its CEL rules (`x-kubernetes-validations`) concern only `managedBy` and the GCS
    fault-tolerance backend; `test_no_field_needs_cel` keeps both out of the manifests.
    """

    def __init__(self, crd_path: Path) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 1 MB in 0.2 s
        crd = yaml.load(crd_path.read_text(), Loader=loader)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        self.kind = crd["spec"]["names"]["kind"]
        self.schema = version["schema"]["openAPIV3Schema"]
        self.validator = jsonschema.Draft7Validator(_closed(self.schema))

    def errors(self, document: Document) -> list[str]:
        errors = [
            f"{self.kind} CRD schema at {'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
            for e in self.validator.iter_errors(document)
        ]
        return errors + _list_type_errors(self.schema, document, self.kind)


def load_crds(folder: Path) -> dict[str, CrdValidator]:
    """The RayService and RayCluster CRDs of a KubeRay checkout's `ray-operator/config/crd/bases`
    (or a copy of those files), by kind."""
    return {
        "RayService": CrdValidator(folder / "ray.io_rayservices.yaml"),
        "RayCluster": CrdValidator(folder / "ray.io_rayclusters.yaml"),
    }


def kuberay_webhook_errors(service: Document) -> list[str]:
    """The checks KubeRay (1.7) applies to a RayService and the RayCluster it creates:
    `ValidateRayServiceMetadata`, `ValidateRayServiceSpec`, `ValidateRayClusterSpec` (the
    parts a manifest can reach) and the RayCluster webhook's unique group names. Two are
    this project's own and marked so: replicas within [min, max], and autoscaler v2 only
    with in-tree autoscaling (KubeRay would silently run no autoscaler)."""
    errors = []
    name = service["metadata"]["name"]
    if len(name) > MAX_RAY_SERVICE_NAME:
        errors.append(f"RayService name should be no more than {MAX_RAY_SERVICE_NAME} characters")
    if len(name) > 63 or not DNS_1035_LABEL.match(name):
        errors.append(f"RayService name should be a valid DNS1035 label: {name!r}")
    spec = service["spec"]
    config = spec["rayClusterConfig"]
    head = config["headGroupSpec"]
    head_pod = head["template"].get("spec", {})
    if not head_pod.get("containers"):
        return [*errors, "headGroupSpec should have at least one container"]
    head_env = env_of(head_pod["containers"][RAY_CONTAINER_INDEX])
    autoscaling = config.get("enableInTreeAutoscaling") is True
    options = config.get("autoscalerOptions") or {}
    v2 = options.get("version") == "v2"
    v2_env = head_env.get("RAY_enable_autoscaler_v2", {}).get("value") in {"1", "true"}
    names = []
    for group_name, group in groups(service):
        names.append(group_name)
        pod = group["template"].get("spec", {})
        if not pod.get("containers"):
            errors.append(f"{group_name}: workerGroupSpec should have at least one container")
            continue
        params = group.get("rayStartParams", {})
        if group.get("resources") and any(
            params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")
        ):
            errors.append(
                f"resource fields should not be set in both rayStartParams and Resources for "
                f"{group_name} group"
            )
        if "labels" in params:
            errors.append(f"rayStartParams['labels'] is not supported for {group_name} group")
        errors += [
            f"{group_name} group label {e}"
            for e in metadata_errors({"labels": group.get("labels", {})})
        ]
        if v2 and pod.get("restartPolicy", "Never") != "Never":
            errors.append(
                f"restartPolicy for {group_name} should be Never or unset when using autoscaler V2"
            )
        if group_name == "head":
            continue
        # Types are the CRD schema's business; here only integers are compared.
        low, high, replicas, idle = (
            value if isinstance(value, int) else None
            for value in (
                group.get("minReplicas"),
                group.get("maxReplicas"),
                group.get("replicas"),
                group.get("idleTimeoutSeconds"),
            )
        )
        if not autoscaling and (low is None or high is None):
            errors.append(f"worker group {group_name} must set both minReplicas and maxReplicas")
        if (low or 0) < 0 or (high or 0) < 0:
            errors.append(f"worker group {group_name} has negative minReplicas or maxReplicas")
        if low is not None and high is not None and low > high:
            errors.append(
                f"worker group {group_name} has minReplicas {low} greater than maxReplicas {high}"
            )
        if replicas is not None and not (low or 0) <= replicas <= (high or replicas):
            errors.append(
                f"(sam3-serve) worker group {group_name}: replicas {replicas} outside "
                f"[minReplicas, maxReplicas]"
            )
        if idle is not None and idle < 0:
            errors.append(f"worker group {group_name}: idleTimeoutSeconds must be non-negative")
        if idle is not None and not (v2 or v2_env):
            errors.append(
                f"worker group {group_name}: idleTimeoutSeconds is set, but autoscaler v2 is "
                "not enabled"
            )
        if autoscaling and group.get("suspend"):
            errors.append(f"worker group {group_name} cannot be suspended with Autoscaler enabled")
    if len(set(names)) != len(names):
        errors.append(f"worker group names must be unique: {names}")
    if "RAY_REDIS_ADDRESS" in head_env and not config.get("gcsFaultToleranceOptions"):
        errors.append("RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance")
    if not autoscaling and v2_env:
        errors.append(
            "RAY_enable_autoscaler_v2 cannot be set when enableInTreeAutoscaling is false"
        )
    if autoscaling and options.get("version") and "RAY_enable_autoscaler_v2" in head_env:
        errors.append(
            "both .spec.autoscalerOptions.version and head Pod env var RAY_enable_autoscaler_v2 "
            "are set"
        )
    if v2 and not autoscaling:
        errors.append(
            "(sam3-serve) autoscalerOptions.version v2 needs enableInTreeAutoscaling: true"
        )
    if _int(options.get("idleTimeoutSeconds")) < 0:
        errors.append("autoscalerOptions.idleTimeoutSeconds must be non-negative")
    if head.get("headService", {}).get("metadata", {}).get("name"):
        errors.append("headGroupSpec.headService.metadata.name should not be set")
    upgrade = (spec.get("upgradeStrategy") or {}).get("type")
    if upgrade not in {None, "NewCluster", "NewClusterWithIncrementalUpgrade", "None"}:
        errors.append(f"Spec.UpgradeStrategy.Type value {upgrade} is invalid")
    if upgrade == "NewClusterWithIncrementalUpgrade" and (
        not autoscaling or not spec["upgradeStrategy"].get("clusterUpgradeOptions")
    ):
        errors.append(
            "NewClusterWithIncrementalUpgrade needs the autoscaler and clusterUpgradeOptions"
        )
    if _int(spec.get("rayClusterDeletionDelaySeconds")) < 0:
        errors.append("Spec.RayClusterDeletionDelaySeconds should be a non-negative integer")
    return errors


def _int(value: Any) -> int:
    """An integer field for a comparison (0 when absent or mistyped: the CRD flags types)."""
    return value if isinstance(value, int) else 0


def ray_service_errors(service: Document, crds: dict[str, CrdValidator] | None) -> list[str]:
    """Everything a cluster with KubeRay would check before running this RayService."""
    errors = kuberay_webhook_errors(service)
    errors += metadata_errors(service["metadata"])
    for group_name, group in groups(service):
        if group["template"].get("spec", {}).get("containers"):
            errors += pod_template_errors(group["template"], group_name)
    if crds is not None:
        errors += crds["RayService"].errors(service)
        # The RayCluster KubeRay creates from it: `<name>-<5 characters>`.
        name = f"{service['metadata']['name']}-abcde"
        if len(name) > MAX_RAY_CLUSTER_NAME:
            errors.append(f"RayCluster name should be at most {MAX_RAY_CLUSTER_NAME} characters")
        ray_cluster = {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": name},
            "spec": service["spec"]["rayClusterConfig"],
        }
        errors += crds["RayCluster"].errors(ray_cluster)
    return errors
