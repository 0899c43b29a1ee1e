"""What the Kubernetes API server checks of a manifest: its strict schemas
(kubernetes-validate) and the rules they cannot express (names, labels, ports, resources,
volumes, tolerations). Each validator returns the messages a cluster would answer with."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import kubernetes_validate

from tests.k8s.manifests import Document, containers

# The oldest Kubernetes the manifests target, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")
STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}

_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])},
    **{"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(["k", "M", "G", "T", "P", "E"])},
}


def quantity(value: str | int) -> Decimal:
    """A Kubernetes quantity (`500m`, `8Gi`, `1e3`, 2) as a number."""
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


def core_schema_errors(document: Document) -> list[str]:
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
