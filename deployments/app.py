"""The application builder `serve_config.yaml` imports: `deployments.app:build_app`.

    segmenter (GPU where there is one; one replica owns each image) <- ingress (CPU, HTTP)

`args:` are validated here, before any replica starts: a typo in `serve_config.yaml` fails
`serve run` / `serve deploy` with a message naming it. Where the replicas start on this
machine with this process's environment (`serve run` on a laptop), the settings they would
start with are checked too, a missing checkpoint file included: said once, here, rather than
in a traceback of every replica Serve retries. Replica counts and autoscaling come
from `serve_config.yaml`'s `deployments:` section; the other deployment options have their
defaults in `DEPLOYMENT_DEFAULTS`, which that file, README.md and k8s/ repeat (a test checks).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings
from ray import serve
from ray.serve import Application
from ray.serve.config import DeploymentActorConfig
from ray.serve.exceptions import RayServeException

from deployments.ingress import Ingress
from deployments.peers import BOARD, HandoffBoard
from deployments.segmenter import SegmenterReplica
from deployments.settings import IngressSettings, SegmenterSettings
from sam3_core.settings import EngineSettings
from sam3_core.weights import HOW_TO_GET_WEIGHTS, HUB_PREFIX

logger = logging.getLogger("ray.serve")

ROUTERS = {
    # Ours: every image has one owner replica, so its embedding is computed once. Ray Serve's
    # ConsistentHashRouter, publishing its ring to the replicas (hand-offs between them) and
    # with an optional load bound (deployments/router.py).
    "consistent_hash": "deployments.router:OwnerRouter",
    # Ray Serve's default, and round robin: for the benchmark's side-by-side comparison.
    "power_of_two": "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter",
    "round_robin": "ray.serve.experimental.round_robin_router:RoundRobinRouter",
}

_BACKPRESSURE = {"status_code": 503, "retry_after_s": 1}
CPU_NODE_SHARE = 0.001
# Options of each deployment unless serve_config.yaml's `deployments:` entry sets them.
DEPLOYMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "Segmenter": {
        # A click is ~5 ms of GPU time and an embed ~100-300 ms: 8 in flight keeps a GPU busy
        # without letting one replica's queue hide latency from the autoscaler.
        "max_ongoing_requests": 8,
        # Per caller (ingress replica); past it the client gets 503 + Retry-After.
        "max_queued_requests": 64,
        "backpressure_config": _BACKPRESSURE,
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": 30,
    },
    "Ingress": {
        "max_ongoing_requests": 256,
        "max_queued_requests": 512,
        "backpressure_config": _BACKPRESSURE,
    },
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
    load_factor: float | None = Field(
        None,
        ge=1,
        description="consistent_hash only: bounded load for hot images. A click whose owner "
        "has more than load_factor x the mean requests in flight (and at least "
        "segmenter_threads) goes to the next replica on the ring, which fetches the owner's "
        "embedding instead of computing it. None: strict affinity.",
    )
    cpu_node_resource: str | None = Field(
        None,
        description="A custom Ray resource only CPU worker nodes advertise. When set, the "
        "ingress replicas and the segmenters' hand-off board each ask for a sliver of it, "
        "which keeps them off GPU nodes (a GPU node they sat on could never scale in). "
        "Unset: they run on any node.",
    )
    engine: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings overriding the SAM3_* environment of every replica, e.g. "
        "{random_weights: tiny} or {checkpoint: /models/sam3.pt, embedding_dtype: bfloat16}.",
    )

    @field_validator("engine")
    @classmethod
    def _known_settings(cls, engine: dict[str, Any]) -> dict[str, Any]:
        """Each override is a setting of the engine or of the ingress, with a valid value."""
        known = EngineSettings.model_fields | _ingress_only() | SegmenterSettings.model_fields
        unknown = sorted(set(engine) - set(known))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown}; settings are the SAM3_* variables' names in "
                "lower case without the prefix, e.g. random_weights, max_prompts"
            )
        for settings in (EngineSettings, IngressSettings, SegmenterSettings):
            try:
                _from_overrides_only(settings)(**_part(engine, settings))
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
                )
                raise ValueError(problems) from None
        return engine


def _ingress_only() -> dict[str, Any]:
    fields = IngressSettings.model_fields
    return {k: v for k, v in fields.items() if k not in EngineSettings.model_fields}


def _part(engine: dict[str, Any], settings: type[BaseSettings]) -> dict[str, Any]:
    """The overrides that are fields of `settings`."""
    return {k: v for k, v in engine.items() if k in settings.model_fields}


def _from_overrides_only(settings: type[BaseSettings]) -> type[BaseSettings]:
    """`settings` reading its arguments alone: the builder's environment is not the
    replicas' (each replica adds its own when it starts)."""

    class Overrides(settings):  # type: ignore[valid-type, misc]
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: Any, *_: Any, **__: Any
        ) -> tuple[Any, ...]:
            return (init_settings,)

    return Overrides


class SettingsError(RayServeException, ValueError):
    """A setting the application cannot start with. Serve reports a `RayServeException` from
    the builder as the application's failure message as it is, once: any other exception is
    retried three times (each printing its traceback) before the app fails."""


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e.get('ctx', {}).get('error', e['msg'])}"
        for e in error.errors()
    )


# Checkpoints that are not a path: the hub, and checkpoints shipped with the package.
NOT_A_PATH = (HUB_PREFIX, "demo:")


def replicas_share_this_environment() -> bool:
    """Whether the replicas will start on this machine with this process's environment: a
    Ray cluster of this machine alone, outside Kubernetes (where the head, which builds the
    app, has neither the GPU workers' environment nor their volumes)."""
    if not ray.is_initialized() or "KUBERNETES_SERVICE_HOST" in os.environ:
        return False
    here = ray.util.get_node_ip_address()
    return all(node["NodeManagerAddress"] == here for node in ray.nodes() if node["Alive"])


def check_replica_settings(engine: dict[str, Any]) -> None:
    """The settings a replica would start with (its environment and `engine`'s overrides),
    and that its weights can be found. Raises ValueError with what to change."""
    try:
        settings = EngineSettings(**_part(engine, EngineSettings))
        for other in (IngressSettings, SegmenterSettings):
            other(**_part(engine, other))
    except ValidationError as error:
        raise SettingsError(
            f"a replica cannot start with these settings: {_problems(error)} (each is a SAM3_* "
            "variable, or a key of args.engine in serve_config.yaml)"
        ) from None
    checkpoint = settings.checkpoint
    if checkpoint and not checkpoint.startswith(NOT_A_PATH):
        if not Path(checkpoint).expanduser().is_file():
            raise SettingsError(f"SAM3_CHECKPOINT={checkpoint} is not a file. {HOW_TO_GET_WEIGHTS}")
    elif not checkpoint and not settings.random_weights:
        raise SettingsError(HOW_TO_GET_WEIGHTS)


def resolve_gpus(requested: float | Literal["auto"]) -> float:
    if requested != "auto":
        return float(requested)
    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    return 1.0 if gpus > 0 else 0.0


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """The application, from the `args:` of `serve_config.yaml`."""
    if not isinstance(args, AppArgs):
        try:
            args = AppArgs.model_validate(args or {})
        except ValidationError as error:
            raise SettingsError(f"serve_config.yaml args: {_problems(error)}") from None
    if replicas_share_this_environment():
        check_replica_settings(args.engine)
    gpus = resolve_gpus(args.segmenter_gpus)
    logger.info(
        "sam3-serve: segmenter replicas get %s GPU(s) each (%s), router %s",
        gpus,
        "requested" if args.segmenter_gpus != "auto" else "auto-detected",
        args.router,
    )
    router_kwargs = (
        {
            "num_virtual_nodes": 100,
            "num_fallback_replicas": args.num_fallback_replicas,
            "load_factor": args.load_factor,
            # Below its engine threads' count a replica starts a request at once.
            "min_load": args.segmenter_threads,
        }
        if args.router == "consistent_hash"
        else {}
    )
    # A sliver: the resource marks the nodes, CPUs size them.
    cpu_node = {args.cpu_node_resource: CPU_NODE_SHARE} if args.cpu_node_resource else {}
    board = DeploymentActorConfig(
        name=BOARD,
        actor_class=ray.remote(HandoffBoard),
        actor_options={"num_cpus": 0, "resources": cpu_node},
    )
    segmenter = serve.deployment(
        SegmenterReplica,
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
        request_router_config={
            "request_router_class": ROUTERS[args.router],
            "request_router_kwargs": router_kwargs,
        },
        # The replicas' mailboxes for hand-offs (deployments/peers.py).
        deployment_actors=[board],
        **DEPLOYMENT_DEFAULTS["Segmenter"],
    )
    ingress_settings = _part(args.engine, IngressSettings)
    # Ray's proxy answers the ingress's own overload (past max_queued_requests) with this
    # Retry-After; the ingress answers a segmenter's with SAM3_RETRY_AFTER_SECONDS itself.
    retry_after = IngressSettings(**ingress_settings).retry_after_seconds
    ingress = serve.deployment(
        Ingress,
        name="Ingress",
        ray_actor_options={"num_cpus": args.ingress_cpus, "resources": cpu_node},
        **{
            **DEPLOYMENT_DEFAULTS["Ingress"],
            "backpressure_config": {**_BACKPRESSURE, "retry_after_s": retry_after},
        },
    )
    return ingress.bind(
        segmenter.bind(
            _part(args.engine, EngineSettings) | _part(args.engine, SegmenterSettings),
            args.segmenter_threads,
        ),
        ingress_settings,
        args.router == "consistent_hash",  # affinity: digest-first clicks pay off
    )
