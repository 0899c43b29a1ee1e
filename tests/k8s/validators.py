"""`document_errors`: every rendered document checked by what would receive it: a RayService
by KubeRay (kuberay_rules), a PodMonitor by the Prometheus Operator (here, as its CRD is not
at hand: the fields this project uses), anything else by Kubernetes (kubernetes_rules)."""

from __future__ import annotations

import kubernetes_validate

from tests.k8s.kuberay_rules import CrdValidator, ray_service_errors
from tests.k8s.kubernetes_rules import core_schema_errors, metadata_errors
from tests.k8s.manifests import Document

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


def pod_monitor_errors(monitor: Document) -> list[str]:
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


def document_errors(document: Document, crds: dict[str, CrdValidator] | None) -> list[str]:
    """What the cluster would answer `kubectl apply` with (KubeRay's CRD schemas left out when
    `crds` is None)."""
    if document["apiVersion"] == "ray.io/v1" and document["kind"] == "RayService":
        return ray_service_errors(document, crds)
    if document["kind"] == "PodMonitor":
        return pod_monitor_errors(document)
    try:
        return core_schema_errors(document) + metadata_errors(document["metadata"])
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"nothing validates {document['apiVersion']} {document['kind']}: {error.message}"]
