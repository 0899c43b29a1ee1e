"""serveConfigV2 is serve_config.yaml's application: the generated patches are fresh, the
rendered config differs only where declared, and Ray Serve and the builder accept it."""

from __future__ import annotations

import copy

import pytest

from tests.k8s.manifests import RAY_SERVICES, ray_service
from tests.k8s.project import ROOT
from tests.k8s.serve_config import (
    EXPECTED_ARG_OVERRIDES,
    deployment_config,
    load_serve_config,
    render_serve_config_module,
    serve_config_differences,
    serve_config_v2,
)


def test_serve_config_patches_are_generated_from_serve_config_yaml():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in render_serve_config_module().render_all().items()
        if not path.is_file() or path.read_text() != text
    ]
    assert not stale, f"stale {stale}: run `python k8s/render_serve_config.py`"


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
