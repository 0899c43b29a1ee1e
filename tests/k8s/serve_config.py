"""serveConfigV2 and serve_config.yaml, the file it is generated from (by
k8s/render_serve_config.py): reading both, and how one differs from the other."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import yaml

from tests.k8s.manifests import Document
from tests.k8s.project import K8S, ROOT

# What serveConfigV2 changes from serve_config.yaml's application, per kustomization: the
# overlays' deliberate overrides (k8s/render_serve_config.py gives the reasons). Anything else
# that differs fails test_serve_config_v2_is_serve_config_yaml.
EXPECTED_ARG_OVERRIDES: dict[str, dict[str, Any]] = {
    "base": {"cpu_node_resource": "sam3_cpu_node"},
    "overlays/gpu": {"segmenter_gpus": 1, "cpu_node_resource": "sam3_cpu_node"},
    "overlays/cpu": {"cpu_node_resource": "sam3_cpu_node"},
}


def serve_config_v2(service: Document) -> dict[str, Any]:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def load_serve_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def deployment_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry of deployment `name` in a Serve config's one application."""
    (application,) = config["applications"]
    (deployment,) = [d for d in application["deployments"] if d["name"] == name]
    return deployment


def render_serve_config_module() -> Any:
    """k8s/render_serve_config.py, imported (k8s/ is no package)."""
    spec = importlib.util.spec_from_file_location(
        "render_serve_config", K8S / "render_serve_config.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
