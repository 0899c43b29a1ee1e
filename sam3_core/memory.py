"""The process's memory: what its caches may use (its share of the node's memory, or of its
GPU's, with everything counted), and handing freed memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil
import torch

from sam3_core.settings import VIDEO_SESSIONS_SHARE

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The embedding cache never gets less, whatever the plan says (it could hold no image).
MIN_EMBEDDING_CACHE_BYTES = 64 * 2**20

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryPlan:
    """How one replica's share of its device's memory is spent. Everything it holds counts:
    `held` (the model and runtime, measured at start), the working memory reserved for
    requests in flight, and each cache's byte budget; the embedding cache gets the rest.

    With `share` = 1 / (replicas that can run on the node, or on the GPU) and the same `pool`
    for all of them (the node's memory as Ray counts it, or the GPU's), the plans of the
    replicas sharing a device add up to at most its memory, whatever order they start in.
    """

    pool: int
    share: float
    held: int
    activation_reserve: int
    logits_cache: int
    text_cache: int
    embedding_cache: int
    video_sessions: int = 0

    @property
    def total(self) -> int:
        """What the replica may hold in all: at most `share` x `pool` (unless the embedding
        cache had to be raised to its floor, which start-up logs)."""
        return (
            self.held
            + self.activation_reserve
            + self.logits_cache
            + self.text_cache
            + self.embedding_cache
            + self.video_sessions
        )


def plan_memory(
    device: torch.device,
    *,
    share: float,
    activation_reserve: int,
    logits_cache: int,
    text_cache: int,
    pool: int | None = None,
    video_sessions: int | None = 0,
) -> MemoryPlan:
    """This replica's plan: its share of `pool`, less what it holds already, the activation
    reserve and the logits and text caches, is shared by the video sessions and the
    embedding cache: `video_sessions` bytes (None: `VIDEO_SESSIONS_SHARE` of it), the
    embedding cache the rest.

    `pool`: the memory the replicas on this node (or GPU) share; None: the GPU's total
    memory, or on the CPU what is free (within the container's limit) plus what this process
    holds (right for one process alone)."""
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        held = torch.cuda.memory_reserved(device)
        pool = total if pool is None else pool
    else:
        held = psutil.Process().memory_info().rss
        pool = available_memory() + held if pool is None else pool
    rest = int(pool * share) - held - activation_reserve - logits_cache - text_cache
    if video_sessions is None:
        video_sessions = max(int(rest * VIDEO_SESSIONS_SHARE), 0)
    rest -= video_sessions
    plan = MemoryPlan(
        pool=pool,
        share=share,
        held=held,
        activation_reserve=activation_reserve,
        logits_cache=logits_cache,
        text_cache=text_cache,
        embedding_cache=max(rest, MIN_EMBEDDING_CACHE_BYTES),
        video_sessions=video_sessions,
    )
    if rest < MIN_EMBEDDING_CACHE_BYTES:
        logger.warning(
            "memory: this replica's share (%.3g of %.0f MiB) does not cover what it holds "
            "(%.0f MiB), its activation reserve, its logits and text caches and its video "
            "sessions; the embedding cache gets %.0f MiB anyway: run fewer replicas per node "
            "or GPU, or lower SAM3_LOGITS_CACHE_BYTES / SAM3_ACTIVATION_RESERVE_BYTES / "
            "SAM3_VIDEO_SESSION_BYTES",
            share,
            pool / 2**20,
            held / 2**20,
            MIN_EMBEDDING_CACHE_BYTES / 2**20,
        )
    return plan


def available_memory() -> int:
    """Free RAM as this process may use it: inside a container (a Kubernetes pod) the
    cgroup's limit, not the node's free memory, is what the OOM killer enforces. psutil
    reads only the latter, hence the cgroup files (v2, else v1)."""
    free = psutil.virtual_memory().available
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = (CGROUP_ROOT / limit_file).read_text().strip()
            usage = int((CGROUP_ROOT / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < free + usage:
            return max(int(limit) - usage, 0)
        return free
    return free


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def release_freed_memory() -> None:
    """Return the free pages of the C heap to the operating system (glibc `malloc_trim`).

    Why: on the CPU an embed allocates and frees hundreds of MiB of activations while the
    cache keeps a few MiB of embedding, and glibc keeps freed memory resident (it raises its
    mmap threshold to the largest block freed, so later blocks come from heap arenas that
    only shrink from the top). Trimming after each embed keeps a replica at its cache budget;
    the price is that the next click faults its working memory in again (`bench/memory.py`:
    +15 ms on the first click after an embed, +9 % per embed, on the narrow model). A fixed
    low mmap threshold (`MALLOC_MMAP_THRESHOLD_`) bounded memory too but made every embed and
    decode ~1.5x slower.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
