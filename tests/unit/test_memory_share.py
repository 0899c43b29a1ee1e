"""How many segmenter replicas share a node or a GPU (`deployments/memory_share.py`)."""

from __future__ import annotations

import pytest

from deployments.memory_share import replicas_beside


@pytest.mark.parametrize(
    ("assigned", "node_cpus", "most", "expected"),
    [
        ({"CPU": 1.0}, 8, 4, 4),  # the shipped config on an 8-CPU node: its maximum, 4
        ({"CPU": 1.0}, 2, 4, 2),  # only two fit a 2-CPU node
        ({"CPU": 0.25}, 4, 4, 4),
        ({"CPU": 1.0}, 1.5, 4, 1),
        ({"CPU": 1.0, "GPU": 1.0}, 64, 4, 1),  # a GPU each: alone on it
        ({"CPU": 1.0, "GPU": 0.25}, 64, 8, 4),  # four share a GPU
        ({"CPU": 1.0, "GPU": 0.3}, 64, 8, 3),
        ({"CPU": 1.0, "GPU": 0.25}, 64, 2, 2),  # no more than the deployment has
        ({}, 8, 3, 3),  # no CPUs asked: any number fit, the deployment's maximum counts
    ],
)
def test_replicas_beside(assigned, node_cpus, most, expected):
    assert replicas_beside(assigned, node_cpus, most) == expected
