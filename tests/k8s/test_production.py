"""What production needs of the rendered RayServices: the pinned Ray and the project's image
everywhere, a head without the model, autoscaler v2, resources on every container, worker
groups sized for the Serve deployments, weights and secrets by reference, ports and probes."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from tests.k8s.kubernetes_rules import quantity
from tests.k8s.manifests import (
    KUSTOMIZATIONS,
    RAY_SERVICES,
    cluster,
    containers,
    env_entries,
    env_of,
    groups,
    only,
    ray_container,
    ray_service,
)
from tests.k8s.project import pinned_ray, pyproject_field
from tests.k8s.serve_config import deployment_config, serve_config_v2


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_ray_version_is_the_pinned_ray(rendered, name):
    assert cluster(ray_service(rendered, name))["rayVersion"] == pinned_ray()


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


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_the_ingress_and_the_handoff_board_stay_on_cpu_workers(rendered, name, monkeypatch):
    """GPU workers advertise CPUs too: without a resource of their own, an ingress replica
    (or the segmenters' hand-off board) could land on a GPU pod and keep it from scaling in.
    serveConfigV2 names a resource that the cpu-workers group alone advertises, and the
    application builder makes both ask for it."""
    from deployments.app import CPU_NODE_SHARE, build_app
    from deployments.peers import BOARD

    # Built as the head pod builds it: on Kubernetes (the weights are on the GPU workers).
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")

    service = ray_service(rendered, name)
    args = serve_config_v2(service)["applications"][0]["args"]
    resource = args["cpu_node_resource"]
    advertised = {
        group_name: group.get("resources", {})
        for group_name, group in groups(service)
        if resource in group.get("resources", {})
        or resource in group.get("rayStartParams", {}).get("resources", "")
    }
    assert list(advertised) == ["cpu-workers"]
    assert float(advertised["cpu-workers"][resource]) >= CPU_NODE_SHARE
    ingress = build_app(args)._bound_deployment
    assert ingress.ray_actor_options["resources"] == {resource: CPU_NODE_SHARE}
    segmenter = ingress.init_args[0]._bound_deployment
    (board,) = segmenter._deployment_config.deployment_actors
    assert board.name == BOARD
    assert board.actor_options["resources"] == {resource: CPU_NODE_SHARE}
    assert segmenter.ray_actor_options.get("resources", {}).get(resource) is None
