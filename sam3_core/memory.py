"""The process's memory: how much the embedding cache may use by default, and handing freed
memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from pathlib import Path

import psutil
import torch

# Share of free device memory (CUDA) or available RAM (CPU) the embedding cache may use
# when SAM3_EMBEDDING_CACHE_BYTES is unset.
DEFAULT_CACHE_SHARE = {"cuda": 0.5, "cpu": 0.25}
CGROUP_ROOT = Path("/sys/fs/cgroup")


def default_cache_budget(device: torch.device) -> int:
    """Half the free GPU memory left after the model is loaded, or a quarter of free RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * DEFAULT_CACHE_SHARE["cuda"])
    return int(available_memory() * DEFAULT_CACHE_SHARE["cpu"])


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
