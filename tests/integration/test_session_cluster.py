"""The session's Ray cluster (`bench.harness.start_local_cluster`) as other Ray users on this
machine see it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def test_the_sessions_cluster_leaves_no_address_for_a_bare_ray_init(local_cluster):
    """`ray.cluster_utils.Cluster` writes its address where a bare `ray.init()` (so `serve run`)
    looks first; a test session killed before its shutdown would leave a newcomer's `serve run`
    joining a dead cluster. The harness removes it at once (it connects by address)."""
    from ray._common.utils import get_ray_address_file

    pointer = Path(get_ray_address_file(None))
    named = pointer.read_text().strip() if pointer.exists() else None
    assert named != local_cluster.cluster.address  # (another session's may be there)
