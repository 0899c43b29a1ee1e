"""One Ray cluster for the whole test session (`bench.harness`): a head node and two worker
nodes (`ray.cluster_utils.Cluster`, all on this machine), Serve's HTTP proxy on the head.

Worker nodes carry one `segmenter_slot` each, so a test can place segmenter replicas on
distinct nodes; other deployments go anywhere. Replicas get fractional CPUs.
"""

from __future__ import annotations

import pytest

from bench.harness import LocalCluster, start_local_cluster


@pytest.fixture(scope="session")
def local_cluster():
    cluster = start_local_cluster(workers=2)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="session")
def service(local_cluster: LocalCluster) -> LocalCluster:
    return local_cluster
