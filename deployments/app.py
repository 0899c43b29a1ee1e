"""The application builder `serve_config.yaml` imports: `deployments.app:build_app`.

    segmenter (GPU where there is one; one replica owns each image) <- ingress (CPU, HTTP)

Replica counts, autoscaling and queue limits come from `serve_config.yaml`'s `deployments:`
section; the defaults here are what `serve run deployments.app:build_app` gets without it.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from deployments.ingress import Ingress
from deployments.segmenter import SegmenterDeployment

logger = logging.getLogger("ray.serve")

ROUTERS = {
    # Ours: every image has one owner replica, so its embedding is computed once.
    "consistent_hash": "ray.serve.experimental.consistent_hash_router:ConsistentHashRouter",
    # Ray Serve's default, and round robin: for the benchmark's side-by-side comparison.
    "power_of_two": "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter",
    "round_robin": "ray.serve.experimental.round_robin_router:RoundRobinRouter",
}


class AppArgs(BaseModel):
    """`args:` of the application in `serve_config.yaml`."""

    model_config = ConfigDict(extra="forbid")

    segmenter_gpus: float | Literal["auto"] = Field(
        "auto",
        description="GPUs per segmenter replica. auto: 1 where the cluster has GPUs, else 0 "
        "(CPU). A number (fractions allowed) for clusters that add GPU nodes on demand.",
    )
    segmenter_cpus: float = Field(1.0, ge=0, description="CPUs per segmenter replica.")
    segmenter_threads: int = Field(
        4, ge=1, description="Engine calls one segmenter replica runs at once."
    )
    ingress_cpus: float = Field(0.5, ge=0, description="CPUs per ingress replica.")
    router: Literal["consistent_hash", "power_of_two", "round_robin"] = Field(
        "consistent_hash", description="Request router of the segmenter (benchmarks compare)."
    )
    num_fallback_replicas: int = Field(
        0,
        ge=0,
        description="consistent_hash only: replicas tried after a busy owner. 0 = strict "
        "affinity (the overloaded owner's callers queue, then get 503).",
    )
    engine: dict[str, Any] = Field(
        default_factory=dict,
        description="Engine settings overriding the SAM3_* environment, e.g. "
        "{random_weights: tiny} or {checkpoint: /models/sam3.pt, embedding_dtype: bfloat16}.",
    )


def resolve_gpus(requested: float | Literal["auto"]) -> float:
    if requested != "auto":
        return float(requested)
    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    return 1.0 if gpus > 0 else 0.0


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """The application, from the `args:` of `serve_config.yaml`."""
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    gpus = resolve_gpus(args.segmenter_gpus)
    logger.info(
        "sam3-serve: segmenter replicas get %s GPU(s) each (%s), router %s",
        gpus,
        "requested" if args.segmenter_gpus != "auto" else "auto-detected",
        args.router,
    )
    router_kwargs = (
        {"num_virtual_nodes": 100, "num_fallback_replicas": args.num_fallback_replicas}
        if args.router == "consistent_hash"
        else {}
    )
    segmenter = serve.deployment(
        SegmenterDeployment,
        name="Segmenter",
        ray_actor_options={
            "num_cpus": args.segmenter_cpus,
            "num_gpus": gpus,
            # Merged with the application's runtime_env. The replica's threads share one glibc
            # heap, which the engine's malloc_trim shrinks after each CPU embed; an arena per
            # thread kept freed memory resident (bench/memory.py: 93 MiB less at the end of
            # its run, for +4 % per embed and ~1 ms per click).
            "runtime_env": {"env_vars": {"MALLOC_ARENA_MAX": "1"}},
        },
        max_ongoing_requests=8,
        max_queued_requests=64,
        backpressure_config={"status_code": 503, "retry_after_s": 1},
        health_check_period_s=10,
        graceful_shutdown_timeout_s=30,
        request_router_config={
            "request_router_class": ROUTERS[args.router],
            "request_router_kwargs": router_kwargs,
        },
    )
    ingress = serve.deployment(
        Ingress,
        name="Ingress",
        ray_actor_options={"num_cpus": args.ingress_cpus},
        max_ongoing_requests=256,
        max_queued_requests=512,
        backpressure_config={"status_code": 503, "retry_after_s": 1},
    )
    return ingress.bind(segmenter.bind(args.engine, args.segmenter_threads), args.engine)
