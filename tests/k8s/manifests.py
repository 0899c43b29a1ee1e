"""The kustomizations under k8s/ as `kubectl apply -k` sends them: rendered by the real
`kubectl kustomize`, with the accessors the tests use to find things in them and a JSON patch
to break them on purpose."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Document = dict[str, Any]

KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/cpu", "monitoring")
RAY_SERVICES = ("base", "overlays/gpu", "overlays/cpu")
RAY_CONTAINER_INDEX = 0  # KubeRay's Ray container is the first of a pod template


class KustomizeError(RuntimeError):
    """`kubectl kustomize` failed; the message is its stderr."""


def kustomize(folder: Path, kubectl: str) -> list[Document]:
    """The documents `kubectl kustomize folder` prints, in its order."""
    built = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    if built.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {folder}: {built.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def only(documents: list[Document], kind: str) -> Document:
    (document,) = [doc for doc in documents if doc["kind"] == kind]
    return document


def ray_service(rendered: dict[str, list[Document]], name: str) -> Document:
    return only(rendered[name], "RayService")


def cluster(service: Document) -> dict[str, Any]:
    return service["spec"]["rayClusterConfig"]


def groups(service: Document) -> Iterator[tuple[str, dict[str, Any]]]:
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


def json_patch(document: Document, operation: dict[str, Any]) -> None:
    """Apply one RFC 6902 `add`, `remove` or `replace` to `document` in place.

    The few lines the mutation tests need (the jsonpatch library is not a dependency). A path
    that does not exist raises (KeyError, IndexError), so a mistyped mutation cannot pass as a
    no-op.
    """
    op, path = operation["op"], operation["path"]
    if op not in {"add", "remove", "replace"} or not path.startswith("/"):
        raise ValueError(f"unsupported JSON patch operation {operation}")
    tokens = [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]
    parent: Any = document
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(parent, list):
        index = len(parent) if op == "add" and last == "-" else int(last)
        if index > len(parent) or (index == len(parent) and op != "add"):
            raise IndexError(f"{path}: list index {index} out of range")
        if op == "add":
            parent.insert(index, value)
        elif op == "remove":
            del parent[index]
        else:
            parent[index] = value
        return
    if op != "add" and last not in parent:
        raise KeyError(f"{op} {path}: no such member")
    if op == "remove":
        del parent[last]
    else:
        parent[last] = value
