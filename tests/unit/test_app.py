"""The application builder `serve_config.yaml` imports (no Ray cluster needed to build)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployments.app import ROUTERS, build_app


def deployments(args: dict) -> dict:
    ingress = build_app(args)._bound_deployment
    segmenter = ingress.init_args[0]._bound_deployment
    return {"Ingress": ingress, "Segmenter": segmenter}


def test_segmenter_options_come_from_the_args():
    built = deployments({"segmenter_gpus": 0.5, "segmenter_cpus": 2, "router": "round_robin"})
    options = built["Segmenter"].ray_actor_options
    assert (options["num_gpus"], options["num_cpus"]) == (0.5, 2)
    router = built["Segmenter"]._deployment_config.request_router_config
    assert router.request_router_class == ROUTERS["round_robin"]


def test_segmenter_processes_share_one_malloc_arena():
    options = deployments({"segmenter_gpus": 0})["Segmenter"].ray_actor_options
    assert options["runtime_env"]["env_vars"]["MALLOC_ARENA_MAX"] == "1"


def test_consistent_hashing_is_strict_by_default():
    router = deployments({"segmenter_gpus": 0})["Segmenter"]._deployment_config
    config = router.request_router_config
    assert config.request_router_class == ROUTERS["consistent_hash"]
    assert config.request_router_kwargs["num_fallback_replicas"] == 0


def test_unknown_args_are_refused():
    with pytest.raises(ValidationError, match="segmenter_gpu"):
        build_app({"segmenter_gpu": 1})
