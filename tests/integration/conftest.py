"""One Ray cluster for the whole test session: a head node and two worker nodes
(`ray.cluster_utils.Cluster`, all on this machine), Serve's HTTP proxy on the head.

Worker nodes carry one `segmenter_slot` each, so a test can place segmenter replicas on
distinct nodes; other deployments go anywhere. Replicas get fractional CPUs.
"""

from __future__ import annotations

import os

# Ray >= 2.59 turns token auth on for local clusters; these tests talk to their own cluster.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

from tests.integration.serving import Service, free_port

NODE = {
    "object_store_memory": 128 * 2**20,
    "_system_config": {"metrics_report_interval_ms": 1000},
}


@pytest.fixture(scope="session")
def ray_cluster():
    metrics_ports = [free_port() for _ in range(3)]
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 4,
            "include_dashboard": False,
            "metrics_export_port": metrics_ports[0],
            **NODE,
        },
    )
    for port in metrics_ports[1:]:
        cluster.add_node(
            num_cpus=2,
            resources={"segmenter_slot": 1},
            object_store_memory=NODE["object_store_memory"],
            metrics_export_port=port,
        )
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, metrics_ports
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def service(ray_cluster) -> Service:
    _, metrics_ports = ray_cluster
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
    return Service(url=f"http://127.0.0.1:{port}", metrics_ports=metrics_ports)
