"""How a segmenter replica learns which replicas share its memory: from Ray's state, before
its engine plans its caches (`sam3_core.memory.plan_memory`).

- On a GPU: the replicas that can share it are 1 / the replica's GPU fraction (Ray packs
  fractions of one GPU up to 1); the pool is the GPU's memory.
- On the CPU: those that fit the node's CPUs at the replica's own CPU count (Ray places no
  more); the pool is the node's memory as Ray counts it (its `memory` resource: the node's
  memory less Ray's object store).

Either count is capped by the deployment's own replica maximum (autoscaling `max_replicas`,
or `num_replicas`). Each replica gets 1 / that count of the pool, so the replicas on a node
or a GPU add up to at most its memory, without talking to each other, whatever order they
start in. `SAM3_MEMORY_SHARE` and `SAM3_MEMORY_BYTES` (or `args.engine`) override either.
"""

from __future__ import annotations

import math

import ray
from ray import serve

from sam3_core.settings import EngineSettings


def replicas_beside(assigned: dict[str, float], node_cpus: float, deployment_most: int) -> int:
    """How many segmenter replicas can share this one's GPU (or, without one, its node),
    itself included."""
    gpus, cpus = assigned.get("GPU", 0.0), assigned.get("CPU", 0.0)
    if gpus > 0:
        fit = 1 / gpus
    elif cpus > 0:
        fit = node_cpus / cpus
    else:
        fit = deployment_most
    return max(1, min(math.floor(fit + 1e-9), deployment_most))


def with_memory_share(settings: EngineSettings) -> EngineSettings:
    """`settings` with this replica's memory share and pool, where the operator set none."""
    if settings.memory_share is not None and settings.memory_bytes is not None:
        return settings
    config = serve.get_replica_context()._deployment_config
    autoscaling = config.autoscaling_config
    most = autoscaling.max_replicas if autoscaling is not None else config.num_replicas
    runtime = ray.get_runtime_context()
    assigned = runtime.get_assigned_resources()
    node = next(n for n in ray.nodes() if n["NodeID"] == runtime.get_node_id())
    resources = node["Resources"]
    share = settings.memory_share or 1 / replicas_beside(assigned, resources["CPU"], most)
    pool = settings.memory_bytes
    if pool is None and assigned.get("GPU", 0.0) == 0:
        pool = int(resources.get("memory", 0)) or None
    return settings.model_copy(update={"memory_share": share, "memory_bytes": pool})
