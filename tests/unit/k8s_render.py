"""A small offline `kustomize build` for the kustomizations under `k8s/`.

It renders exactly the features `k8s/` uses, as kustomize v5 does, and refuses any other
(a kustomization key it does not know, a patch op it does not apply), so an overlay cannot
use a feature the tests would silently skip:

- `resources`: files (one or more YAML documents) and kustomization folders, in order;
- `configMapGenerator` with `files` (`key=path` or `path`) and `options.labels`, and
  `generatorOptions.disableNameSuffixHash: true` (no content-hash suffix: none is computed);
- `patches` with `path` and `target` (group/version/kind/name), as JSON 6902 operation
  lists (add, remove, replace, test);
- `images` (`name`, `newName`, `newTag`) in every `containers` and `initContainers` list,
  at any depth (kustomize does the same for custom resources such as RayService).

Order as kustomize's: resources, then generators, then patches, then images.
`tests/unit/test_k8s_manifests.py` compares the output with `kubectl kustomize` where that
binary exists.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION = "kustomization.yaml"
SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "patches",
    "images",
    "configMapGenerator",
    "generatorOptions",
}


class RenderError(ValueError):
    """A kustomization uses a feature this renderer does not render, or a patch fails."""


def render(folder: Path) -> list[dict[str, Any]]:
    """The documents `kustomize build folder` prints (order aside)."""
    kustomization = yaml.safe_load((folder / KUSTOMIZATION).read_text()) or {}
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{folder / KUSTOMIZATION}: unsupported kustomize keys {sorted(unknown)}")
    documents: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        if path.is_dir():
            documents += render(path)
        else:
            documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    documents += _generate_config_maps(folder, kustomization)
    for patch in kustomization.get("patches", []):
        _apply_patch(folder, patch, documents)
    for image in kustomization.get("images", []):
        for document in documents:
            _set_image(document, image)
    return documents


def _generate_config_maps(folder: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    generators = kustomization.get("configMapGenerator", [])
    options = kustomization.get("generatorOptions", {})
    if generators and options != {**options, "disableNameSuffixHash": True}:
        raise RenderError("configMapGenerator needs generatorOptions.disableNameSuffixHash: true")
    if set(options) - {"disableNameSuffixHash", "labels"}:
        raise RenderError(f"unsupported generatorOptions {sorted(options)}")
    config_maps = []
    for generator in generators:
        if set(generator) - {"name", "files", "options"} or set(generator.get("options", {})) - {
            "labels"
        }:
            raise RenderError(f"unsupported configMapGenerator fields in {generator}")
        data = {}
        for entry in generator["files"]:
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (folder / path).read_text()
        labels = {**options.get("labels", {}), **generator.get("options", {}).get("labels", {})}
        metadata: dict[str, Any] = {"name": generator["name"]}
        if labels:
            metadata["labels"] = labels
        config_maps.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
        )
    return config_maps


def _apply_patch(folder: Path, patch: dict[str, Any], documents: list[dict[str, Any]]) -> None:
    if set(patch) != {"path", "target"}:
        raise RenderError(f"patches need exactly path and target (JSON 6902): {patch}")
    operations = yaml.safe_load((folder / patch["path"]).read_text())
    if not isinstance(operations, list):
        raise RenderError(f"{patch['path']}: only JSON 6902 patches (a list of operations)")
    matches = [doc for doc in documents if _matches(doc, patch["target"])]
    if not matches:
        raise RenderError(f"{patch['path']}: no resource matches target {patch['target']}")
    for document in matches:
        for operation in operations:
            json_patch(document, operation)


def _matches(document: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = document["apiVersion"].rpartition("/")
    found = {
        "group": group,
        "version": version,
        "kind": document["kind"],
        "name": document["metadata"]["name"],
    }
    if set(target) - set(found):
        raise RenderError(f"unsupported patch target fields {sorted(set(target) - set(found))}")
    return all(found[key] == value for key, value in target.items())


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer must start with '/': {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, append: bool = False) -> int:
    if append and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise RenderError(f"bad list index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not append):
        raise RenderError(f"list index {index} out of range")
    return index


def json_patch(document: dict[str, Any], operation: dict[str, Any]) -> None:
    """Apply one RFC 6902 operation (add, remove, replace, test) to `document` in place."""
    op, tokens = operation["op"], _pointer(operation["path"])
    if op not in {"add", "remove", "replace", "test"}:
        raise RenderError(f"unsupported JSON patch op {op!r}")
    parent: Any = document
    for token in tokens[:-1]:
        try:
            parent = parent[_index(parent, token)] if isinstance(parent, list) else parent[token]
        except (KeyError, TypeError) as error:
            raise RenderError(f"{operation['path']}: no {token!r}") from error
    last = tokens[-1]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(parent, list):
        index = _index(parent, last, append=op == "add")
        if op == "add":
            parent.insert(index, value)
        elif op == "remove":
            del parent[index]
        elif op == "replace":
            parent[index] = value
        elif parent[index] != value:
            raise RenderError(f"test failed at {operation['path']}: {parent[index]!r} != {value!r}")
        return
    if not isinstance(parent, dict):
        raise RenderError(f"{operation['path']}: parent is not an object or a list")
    if op != "add" and last not in parent:
        raise RenderError(f"{op} {operation['path']}: no such member")
    if op == "remove":
        del parent[last]
    elif op == "test":
        if parent[last] != value:
            raise RenderError(f"test failed at {operation['path']}: {parent[last]!r} != {value!r}")
    else:
        parent[last] = value


def _set_image(node: Any, image: dict[str, str]) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise RenderError(f"unsupported images fields {sorted(image)}")
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in {"containers", "initContainers"} and isinstance(value, list):
            for container in value:
                name, tag = _split_image(container.get("image", ""))
                if name == image["name"]:
                    name = image.get("newName", name)
                    tag = image.get("newTag", tag)
                    container["image"] = f"{name}:{tag}" if tag else name
        _set_image(value, image)


def _split_image(reference: str) -> tuple[str, str]:
    if "@" in reference:
        raise RenderError(f"image digests are not rendered: {reference}")
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:  # no tag, or the colon was a registry port
        return reference, ""
    return name, tag
