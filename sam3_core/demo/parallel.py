"""Data-parallel training of the demo model over processes on one machine (`--workers`).

On this machine's two cores, one process leaves a core idle while it draws scenes, finds
corrective clicks and scores masks (NumPy, one thread), and torch's intra-op threads share
each small operation of the tiny model between the cores and wait on each other: a stage-1
step of 4 scenes takes 0.213 s on 2 threads, 0.300 s on one. Two processes of one thread, 2
scenes each, take 0.181 s, the gradients' mean included (`torch.distributed`, gloo). Over
the whole recipe (7000 stage-1 steps, then 800 + 300 tracking steps) two processes took 25.1
and 13.9 min where one process of two threads took 30.7 and 16.9: 39.0 min instead of 47.7,
within the 40-minute budget. The processes
start alike (the same seeded weights and optimiser), draw different scenes (seeded by rank),
and every step apply the same mean gradient, so their weights stay equal bit for bit; the
first process keeps the model when they are done.

Why not `DistributedDataParallel`: its reducer marks each gradient ready once per forward,
and a step here runs the mask decoder two or three times (refinement rounds) before its one
backward; the mean of the gradients after `backward()` is what it would compute, and on one
machine overlapping it with the backward pass has no idle core to use.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import torch
import torch.distributed as dist

RENDEZVOUS_TIMEOUT = datetime.timedelta(minutes=5)


def join(rendezvous: str, rank: int, workers: int) -> None:
    """Join the group of `workers` processes meeting at `rendezvous` (a file path)."""
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=workers,
        timeout=RENDEZVOUS_TIMEOUT,
    )


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def workers() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def mean_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient with its mean over the processes (in one message).
    A parameter no process gave a gradient keeps none (AdamW then leaves it as it is, as in
    one process); one that only some gave counts zero for the others."""
    if workers() == 1:
        return
    parameters = list(parameters)
    given = torch.tensor([p.grad is not None for p in parameters], dtype=torch.uint8)
    dist.all_reduce(given, op=dist.ReduceOp.MAX)
    used = [p for p, flag in zip(parameters, given.tolist(), strict=True) if flag]
    for parameter in used:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
    grads = [p.grad for p in used]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= workers()
    for grad, mean in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(mean)


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A step's logged values, averaged over the processes (which log the same keys)."""
    if workers() == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(keys, (values / workers()).tolist(), strict=True))


def any_process(flag: bool) -> bool:
    """True on every process if it is true on any (a time budget reached on one stops all)."""
    if workers() == 1:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
