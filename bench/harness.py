"""The harness benchmarks and Ray integration tests share: a local multi-node Ray cluster with
Serve's HTTP proxy, deploying `serve_config.yaml` and waiting until it truly serves, and
reading the replicas' Prometheus metrics."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

# Ray >= 2.59 turns token auth on for local clusters; these clusters are the harness's own.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray
import requests
from prometheus_client.parser import text_string_to_metric_families
from ray import serve
from ray.cluster_utils import Cluster
from ray.serve.schema import ServeDeploySchema

from deployments.config import deploy_config, load_config

T = TypeVar("T")
SEGMENTER_SLOT = "segmenter_slot"
TINY_ENGINE = {"random_weights": "tiny", "max_hole_area": 0, "device": "cpu"}
# Ray gives the head node this resource: a deployment asking for a sliver of it runs there.
ON_HEAD = {"node:__internal_head__": 0.01}


def app_config(
    replicas: int,
    *,
    args: dict[str, Any] | None = None,
    segmenter: dict[str, Any] | None = None,
    ingress: dict[str, Any] | None = None,
) -> ServeDeploySchema:
    """serve_config.yaml's application with the tiny random model (unless `args` says
    otherwise), fixed replica counts and fractional CPUs."""
    return load_config(
        args={"engine": TINY_ENGINE, "segmenter_cpus": 0.25, "ingress_cpus": 0.25, **(args or {})},
        deployments={
            "Segmenter": {"num_replicas": replicas, **(segmenter or {})},
            "Ingress": {"num_replicas": 1, **(ingress or {})},
        },
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], T], timeout: float, what: str, every: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def _named(text: str, prefix: str) -> str:
    """The exposition's lines about metrics whose names start with `prefix`. Ray's own
    metrics are most of each node's text, and parsing all of it was most of a scrape."""
    kept = []
    for line in text.splitlines():
        words = line.split(" ", 3)  # "# HELP name ...", "# TYPE name kind", or a sample
        name = words[2] if line.startswith("# ") and len(words) > 2 else line
        if name.startswith(prefix):
            kept.append(line)
    return "\n".join(kept) + "\n"


class Prometheus:
    """Ray's metrics endpoints (one per node), read as Prometheus would."""

    def __init__(self, ports: Iterable[int]) -> None:
        self.ports = list(ports)

    def samples(self, prefix: str = "ray_sam3_") -> list[tuple[str, dict[str, str], float]]:
        out = []
        for port in self.ports:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            except requests.RequestException:
                continue  # a node that is gone, or its agent restarting
            for family in text_string_to_metric_families(_named(text, prefix)):
                out += [(s.name, s.labels, s.value) for s in family.samples]
        return out

    def total(self, name: str, **labels: str) -> float:
        """Sum of a metric over every series whose labels include `labels`."""
        return sum(
            value
            for sample, sample_labels, value in self.samples()
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    @staticmethod
    def settled(read: Callable[[], T], interval: float = 2.5) -> T:
        """`read()` once it stops moving (replicas report metrics every second)."""
        previous = read()
        while True:
            time.sleep(interval)
            current = read()
            if current == previous:
                return current
            previous = current


@dataclass
class LocalCluster:
    """A head node and `workers` worker nodes on this machine; Serve's proxy on the head."""

    cluster: Cluster
    url: str
    metrics: Prometheus
    worker_ports: dict[Any, int] = field(default_factory=dict)

    def post(self, path: str, body: dict, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=300, **kwargs)

    def add_worker(self, cpus: float = 2) -> Any:
        """A worker node with one segmenter slot (tests pin segmenter replicas to slots)."""
        port = free_port()
        node = self.cluster.add_node(
            num_cpus=cpus,
            resources={SEGMENTER_SLOT: 1},
            object_store_memory=128 * 2**20,
            metrics_export_port=port,
        )
        self.worker_ports[node] = port
        self.metrics.ports.append(port)
        return node

    def remove_worker(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)
        self.metrics.ports.remove(self.worker_ports.pop(node))

    def shutdown(self) -> None:
        serve.shutdown()
        ray.shutdown()
        self.cluster.shutdown()


def start_local_cluster(
    workers: int = 2, head_cpus: float = 4, object_store_mib: int = 128, head_gpus: int = 0
) -> LocalCluster:
    """`object_store_mib` on the head: what passes through it (request bodies, images handed
    between replicas) beyond it spills to disk."""
    head_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": head_cpus,
            "num_gpus": head_gpus,
            "include_dashboard": False,
            "metrics_export_port": head_port,
            "object_store_memory": object_store_mib * 2**20,
            "_system_config": {"metrics_report_interval_ms": 1000},
        },
    )
    # `Cluster` writes its address to /tmp/ray/ray_current_cluster, where a later bare
    # `ray.init()` (`serve run`, `serve status`) looks first: a session killed before its
    # shutdown would leave that pointing at a dead cluster, and a newcomer's `serve run` would
    # hang joining it. Everything here connects by address, so the pointer goes at once.
    ray._common.utils.reset_ray_address()
    local = LocalCluster(cluster, url="", metrics=Prometheus([head_port]))
    for _ in range(workers):
        local.add_worker()
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port, "location": "HeadOnly"})
    local.url = f"http://127.0.0.1:{http_port}"
    return local


def running(app: str, replicas: int) -> bool:
    """`serve status`: the app RUNNING with exactly `replicas` segmenters, all RUNNING."""
    status = serve.status().applications.get(app)
    if status is None or status.status != "RUNNING":
        return False
    states = status.deployments["Segmenter"].replica_states
    return states.get("RUNNING", 0) == replicas and sum(states.values()) == replicas


def deploy_and_wait(
    config: ServeDeploySchema, replicas: dict[str, int], base_url: str, probe_image: dict
) -> dict[str, set[str]]:
    """Deploy `config` (apps by name -> segmenter count) and wait until each app runs and its
    ingress's router reaches every segmenter replica (the router learns them by long poll).

    Returns the replica ids each app's ingress was seen to reach."""
    deploy_config(config)
    prefixes = {app.name: (app.route_prefix or "/").rstrip("/") for app in config.applications}
    reached = {}
    for app, count in replicas.items():
        wait_for(partial(running, app, count), 600, f"{app} with {count} segmenters")
        reached[app] = reach_all(f"{base_url}{prefixes[app]}", count, probe_image)
    return reached


def reach_all(app_url: str, count: int, probe_image: dict) -> set[str]:
    """Embed probe images under fresh ids until `count` replicas have answered."""
    seen: set[str] = set()

    def routed_to_all() -> bool:
        for i in range(8):
            body = {"image": probe_image, "image_id": f"probe-{time.monotonic_ns()}-{i}"}
            response = requests.post(f"{app_url}/sam3/embed_image", json=body, timeout=300)
            if response.status_code == 200:
                seen.add(response.headers["x-sam3-replica"])
        return len(seen) >= count

    wait_for(routed_to_all, 300, f"the router at {app_url} to reach {count} replicas")
    return seen
