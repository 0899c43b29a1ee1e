"""Reliability: overload, hang-ups, concurrency, replica and node failure, a memory soak.

    python -m bench.reliability            # every scenario, full size (~6 min on 2 cores)
    python -m bench.reliability --quick    # the sizes tests/integration/test_faults.py uses

Each scenario deploys serve_config.yaml's application on a local multi-node Ray cluster,
drives it over HTTP through Ray's proxy (127.0.0.1 only; every load loop is bounded in
count and time), and returns its figures; the tests assert on the same figures. Random
weights throughout ("tiny", or "narrow" for the soak, whose embeddings are big enough to
weigh on memory). Writes bench/results/reliability[-quick].json.

Modules: `clients` (deploying, the click loop and its outcomes), `load` (overload, hang-ups,
concurrency), `failures` (replica and node loss), `soak` (memory), `__main__` (the command
line). Here: the scenarios by name, with their quick and full sizes.
"""

from __future__ import annotations

from functools import partial

from bench.harness import SEGMENTER_SLOT
from bench.reliability.failures import node_loss, replica_failure
from bench.reliability.load import (
    cancellation_in_the_callers_queue,
    cancellation_in_the_replicas_queue,
    cross_talk,
    overload,
)
from bench.reliability.soak import soak

__all__ = [
    "FULL",
    "QUICK",
    "SCENARIOS",
    "SEGMENTER_SLOT",
    "cancellation_in_the_callers_queue",
    "cancellation_in_the_replicas_queue",
    "cross_talk",
    "node_loss",
    "overload",
    "replica_failure",
    "soak",
]

SCENARIOS = {
    "overload": overload,
    "cancellation": cancellation_in_the_callers_queue,
    "cancellation_in_the_replica": cancellation_in_the_replicas_queue,
    "cross_talk": cross_talk,
    "replica_failure": replica_failure,
    "node_loss": node_loss,
    "soak": soak,
    "soak_without_release": partial(soak, release_memory=False),
}
QUICK = {
    "overload": {"clicks": 200},
    "cancellation": {"hangups": 8},
    "cancellation_in_the_replica": {"hangups": 4},
    "cross_talk": {"clients": 32, "images": 8, "clicks": 3},
    "replica_failure": {"load_s": 9},
    "node_loss": {"load_s": 12},
    # 3x the budget: the cache is full after the first third (the baseline), the plateau's
    # last third holds the steady state (plateau 1.04 budgets alone here, as with 4x; the
    # soak is the suite's longest test on the Ray worker: 110 to 240 s at 4x).
    "soak": {"budget_images": 12, "factor": 3},
    "soak_without_release": {"budget_images": 12, "factor": 3},
}
FULL = {
    "overload": {"clicks": 400},
    "cancellation": {"hangups": 20},
    "cancellation_in_the_replica": {"hangups": 4},
    "cross_talk": {"clients": 32, "images": 8, "clicks": 6},
    "replica_failure": {"load_s": 20},
    "node_loss": {"load_s": 30},
    "soak": {"budget_images": 24, "factor": 5},
    "soak_without_release": {"budget_images": 24, "factor": 5},
}
