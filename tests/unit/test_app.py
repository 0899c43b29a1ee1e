"""The application builder `serve_config.yaml` imports (no Ray cluster needed to build)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deployments import app as app_module
from deployments.app import (
    DEPLOYMENT_DEFAULTS,
    ROUTERS,
    SettingsError,
    build_app,
    check_replica_settings,
    replicas_share_this_environment,
)

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"


@pytest.fixture(autouse=True)
def no_ray_cluster(monkeypatch):
    """Build as on a machine without a Ray cluster, whatever the session's Ray tests left
    connected: the builder checks the replicas' settings only where a local cluster shares
    this process's environment (`replicas_share_this_environment`)."""
    monkeypatch.setattr(app_module.ray, "is_initialized", lambda: False)


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


def test_the_load_bound_and_the_replicas_engine_threads_reach_the_router():
    config = deployments({"segmenter_gpus": 0, "load_factor": 1.5, "segmenter_threads": 3})
    kwargs = config["Segmenter"]._deployment_config.request_router_config.request_router_kwargs
    assert (kwargs["load_factor"], kwargs["min_load"]) == (1.5, 3)
    with pytest.raises(SettingsError, match="load_factor"):
        build_app({"load_factor": 0.5})


def test_nothing_pins_the_ingress_unless_asked():
    """Locally there is no CPU-node resource; on Kubernetes, serveConfigV2 names one
    (tests/k8s/test_production.py)."""
    built = deployments({"segmenter_gpus": 0})
    assert built["Ingress"].ray_actor_options["resources"] == {}
    (board,) = built["Segmenter"]._deployment_config.deployment_actors
    assert board.actor_options == {"num_cpus": 0, "resources": {}}


def test_segmenter_replica_settings_pass_with_the_engines():
    built = deployments({"segmenter_gpus": 0, "engine": {"handoff_timeout_seconds": 5}})
    segmenter_settings, _ = built["Segmenter"].init_args
    assert segmenter_settings == {"handoff_timeout_seconds": 5}
    with pytest.raises(SettingsError, match="handoff_timeout_seconds"):
        build_app({"segmenter_gpus": 0, "engine": {"handoff_timeout_seconds": 0}})


def test_unknown_args_are_refused():
    with pytest.raises(SettingsError, match="segmenter_gpu"):
        build_app({"segmenter_gpu": 1})


@pytest.mark.parametrize(
    ("engine", "names"),
    [
        ({"randm_weights": "tiny"}, "randm_weights"),
        ({"max_prompts": 0}, "max_prompts"),
        ({"random_weights": "huge"}, "random_weights"),
        ({"url_timeout_seconds": -1}, "url_timeout_seconds"),
    ],
)
def test_engine_settings_are_checked_when_the_app_is_built(engine, names):
    with pytest.raises(SettingsError, match=names):
        build_app({"segmenter_gpus": 0, "engine": engine})


def test_each_deployment_gets_its_own_settings(monkeypatch):
    # The builder's environment is not the replicas': only the overrides are checked here.
    monkeypatch.setenv("SAM3_MAX_PROMPTS", "0")
    engine = {"random_weights": "tiny", "max_prompts": 5, "api_keys": "k", "allow_url_input": True}
    built = deployments({"segmenter_gpus": 0, "engine": engine})
    segmenter_settings, _ = built["Segmenter"].init_args
    _, ingress_settings, _ = built["Ingress"].init_args
    assert segmenter_settings == {"random_weights": "tiny", "max_prompts": 5}
    assert ingress_settings == {"max_prompts": 5, "api_keys": "k", "allow_url_input": True}


def test_deployment_options_are_the_defaults_table():
    built = deployments({"segmenter_gpus": 0})
    for name, options in DEPLOYMENT_DEFAULTS.items():
        config = built[name]._deployment_config
        for option, value in options.items():
            got = getattr(config, option)
            assert (got.model_dump() if hasattr(got, "model_dump") else got) == value, option


def _serve_config_deployments(config: dict) -> dict[str, dict]:
    (app,) = config["applications"]
    return {entry["name"]: entry for entry in app["deployments"]}


def test_serve_config_readme_and_k8s_agree_with_the_defaults_table():
    sources = {"serve_config.yaml": yaml.safe_load((ROOT / "serve_config.yaml").read_text())}
    for patch in sorted((ROOT / "k8s").glob("**/serve-config.yaml")):
        (operation,) = yaml.safe_load(patch.read_text())
        sources[str(patch.relative_to(ROOT))] = yaml.safe_load(operation["value"])
    for source, config in sources.items():
        for name, entry in _serve_config_deployments(config).items():
            for option, value in entry.items():
                if option in DEPLOYMENT_DEFAULTS[name]:
                    assert value == DEPLOYMENT_DEFAULTS[name][option], (source, name, option)
    shown = _serve_config_deployments(sources["serve_config.yaml"])
    readme = {
        (name, option): yaml.safe_load(value)
        for name, option, value in re.findall(
            r"^\| `deployments\[(\w+)\]\.(\w+)` \| `([^`]+)` \|", README.read_text(), re.M
        )
    }
    for name, options in DEPLOYMENT_DEFAULTS.items():
        for option, value in options.items():
            assert readme.get((name, option)) == value, f"README.md: {name}.{option}"
        for option in ("max_ongoing_requests", "max_queued_requests"):
            assert option in shown[name], f"serve_config.yaml shows {name}.{option}"


def test_retry_after_of_the_ingress_follows_the_setting(monkeypatch):
    monkeypatch.setenv("SAM3_RETRY_AFTER_SECONDS", "7")
    config = deployments({"segmenter_gpus": 0})["Ingress"]._deployment_config
    assert config.backpressure_config.retry_after_s == 7
    config = deployments({"segmenter_gpus": 0, "engine": {"retry_after_seconds": 3}})
    assert config["Ingress"]._deployment_config.backpressure_config.retry_after_s == 3


def test_digest_first_clicks_only_with_affinity():
    for router, affinity in (("consistent_hash", True), ("round_robin", False)):
        (_, _, passed) = deployments({"segmenter_gpus": 0, "router": router})["Ingress"].init_args
        assert passed is affinity


class TestReplicaSettingsAtBuildTime:
    """Where the replicas start with the builder's environment (`serve run` on one machine),
    a setting they cannot start with fails the build, said once."""

    @pytest.fixture(autouse=True)
    def clean_environment(self, monkeypatch):
        for name in ("SAM3_CHECKPOINT", "SAM3_RANDOM_WEIGHTS", "SAM3_MAX_PROMPTS"):
            monkeypatch.delenv(name, raising=False)

    def test_a_missing_checkpoint_file_is_named_with_how_to_get_weights(self, tmp_path):
        missing = tmp_path / "sam3.pt"
        with pytest.raises(ValueError, match=f"SAM3_CHECKPOINT={missing} is not a file") as raised:
            check_replica_settings({"checkpoint": str(missing)})
        assert "hf download facebook/sam3" in str(raised.value)
        missing.write_bytes(b"")
        check_replica_settings({"checkpoint": str(missing)})

    @pytest.mark.parametrize("checkpoint", ["hf://facebook/sam3", "demo:shapes"])
    def test_checkpoints_that_are_not_paths_pass(self, monkeypatch, checkpoint):
        monkeypatch.setenv("SAM3_CHECKPOINT", checkpoint)
        check_replica_settings({})

    def test_no_weights_at_all(self):
        with pytest.raises(ValueError, match="No SAM3 weights configured"):
            check_replica_settings({})
        check_replica_settings({"random_weights": "tiny"})

    def test_a_bad_value_in_the_environment(self, monkeypatch):
        monkeypatch.setenv("SAM3_MAX_PROMPTS", "0")
        with pytest.raises(ValueError, match="cannot start with these settings: max_prompts"):
            check_replica_settings({"random_weights": "tiny"})

    def test_the_builder_checks_only_where_the_replicas_share_its_environment(
        self, monkeypatch, tmp_path
    ):
        args = {"segmenter_gpus": 0, "engine": {"checkpoint": str(tmp_path / "none.pt")}}
        assert not replicas_share_this_environment()  # no Ray cluster here
        build_app(args)
        monkeypatch.setattr(app_module, "replicas_share_this_environment", lambda: True)
        with pytest.raises(ValueError, match="is not a file"):
            build_app(args)

    def test_kubernetes_pods_never_check(self, monkeypatch):
        """The head builds the app; the checkpoint is on the GPU workers' volume."""
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setattr(app_module.ray, "is_initialized", lambda: True)
        assert not replicas_share_this_environment()
