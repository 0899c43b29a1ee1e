"""Segmenter replicas sharing a node plan memory that adds up (`deployments/memory_share.py`),
on the session's local cluster: a head node of 4 CPUs and two workers of 2.

The nodes are processes of this one machine, each of which Ray gives the machine's memory:
the plans add up per node, as on a real cluster, not over the three together.
"""

from __future__ import annotations

import pytest
from ray import serve

from bench.harness import LocalCluster, Prometheus, wait_for
from deployments.config import APP_NAME
from tests.integration.serving import deploy

pytestmark = pytest.mark.ray


def test_four_cpu_replicas_of_the_shipped_config_add_up_per_node(service: LocalCluster):
    # serve_config.yaml's CPUs per segmenter (1) and its autoscaling maximum (4 replicas).
    # From nothing: while an earlier test's replicas drain they may still answer (and name
    # themselves to) the probes that tell this deployment's replicas, which plan nothing here.
    serve.delete(APP_NAME)
    replicas = deploy(service, 4, args={"segmenter_cpus": 1})

    def plans_by_node() -> dict[int, dict[str, dict[str, float]]] | None:
        """Node (its metrics port) -> replica -> its plan; None until all four reported."""
        by_node: dict[int, dict[str, dict[str, float]]] = {}
        for port in service.metrics.ports:
            plans: dict[str, dict[str, float]] = {}
            for name, labels, value in Prometheus([port]).samples():
                replica = labels.get("replica")
                if replica in replicas and name.startswith("ray_sam3_memory_"):
                    plans.setdefault(replica, {})[name.removeprefix("ray_sam3_memory_")] = value
            by_node[port] = plans
        complete = [p for plans in by_node.values() for p in plans.values() if len(p) == 3]
        return by_node if len(complete) == 4 else None

    by_node = wait_for(plans_by_node, 60, "the four replicas' memory plans")
    for port, plans in by_node.items():
        if not plans:
            continue
        pools = {plan["pool_bytes"] for plan in plans.values()}
        assert len(pools) == 1, plans  # one pool per node, whatever the start order
        (pool,) = pools
        # Head: 4 CPUs, 4 replicas fit; workers: 2 CPUs, 2 fit.
        expected_share = 1 / 4 if port == service.metrics.ports[0] else 1 / 2
        assert all(plan["share"] == pytest.approx(expected_share) for plan in plans.values())
        assert sum(plan["share"] for plan in plans.values()) <= 1
        assert sum(plan["planned_bytes"] for plan in plans.values()) <= pool
