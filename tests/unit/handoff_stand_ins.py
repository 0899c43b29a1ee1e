"""What the hand-off simulation (`tests/unit/handoff_simulation.py`) stands in for: time
(`SimLoop`, an event loop on virtual time whose executor work runs on the loop after a
seeded delay) and the model (`SimEngine`: real `Pictures` over real caches with a
one-number embedding; `sim_run`, the engine call whose reply names the picture)."""

from __future__ import annotations

import asyncio
import random
import selectors
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

import torch

from deployments.operations import Reply
from sam3_core.caches import EmbeddingCache, LogitsCache
from sam3_core.model import ImageEmbedding
from sam3_core.pictures import Pictures


class SimLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: when nothing is ready, time jumps to the next timer.
    Executor work (the engine's) runs on the loop after a virtual delay, never in threads."""

    def __init__(self, rng: random.Random) -> None:
        self._virtual = 0.0
        self.rng = rng
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual

    def run_in_executor(self, executor: Any, func: Callable, *args: Any) -> asyncio.Future:
        future = self.create_future()

        def work() -> None:  # runs even if the caller is gone, like a worker thread
            try:
                result = func(*args)
            except BaseException as error:
                if not future.cancelled():
                    future.set_exception(error)
                return
            if not future.cancelled():
                future.set_result(result)

        self.call_later(self.rng.uniform(0.001, 0.05), work)
        return future


class _VirtualSelector(selectors.BaseSelector):
    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list:
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing scheduled and nothing ready")
        self._loop._virtual += max(timeout, 0.0)
        return []

    def get_map(self) -> dict:
        return self._keys


async def _inline(func: Callable, /, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


class InjectedFailure(RuntimeError):
    """A request that failed after its embed (as a CUDA OOM in the decoder would)."""


class SimEngine:
    """What `SegmenterReplica` needs of `sam3_core.Segmenter`: real `Pictures` over real
    caches, with a stand-in embed (one number per picture)."""

    def __init__(self, rng: random.Random, cache_entries: int, fail_rate: float) -> None:
        self.rng = rng
        self.fail_rate = fail_rate
        self.on_embed: Callable[[Any, str], None] = lambda key, digest: None
        self.logits = LogitsCache(100, 2**20)
        self.embeddings = EmbeddingCache(2**30, cache_entries, on_evict=self._left)
        # Pictures the cache's LRU pushed out, by key (not those the hand-off dropped).
        self.evicted: Counter[Hashable] = Counter()
        self._dropping = False
        self.pictures = Pictures(
            self.embeddings,
            self.logits,
            self._embed,
            device=torch.device("cpu"),
            store_dtype=torch.float32,
            needs_trunk=False,
            max_image_id_length=64,
        )

        drop = self.pictures.drop_image

        def drop_image(*args: Any) -> bool:
            self._dropping = True
            try:
                return drop(*args)
            finally:
                self._dropping = False

        self.pictures.drop_image = drop_image  # type: ignore[method-assign]

        # The picture each key last arrived as by a hand-off or loan (its digest).
        self.adopted: dict[Hashable, str] = {}
        adopt = self.pictures.adopt_image

        def adopt_image(key: Any, state: Any) -> bool:
            kept = adopt(key, state)
            if kept:
                self.adopted[key] = state.content_digest
            return kept

        self.pictures.adopt_image = adopt_image  # type: ignore[method-assign]

    def _left(self, key: Hashable, entry: Any) -> None:
        self.logits.drop_image((key, entry.content_digest))
        if not self._dropping and self.embeddings.peek(key) is None:
            self.evicted[key] += 1

    def _embed(self, image: bytes) -> ImageEmbedding:
        tensor = torch.zeros(1)
        return ImageEmbedding(tensor, (tensor, tensor), (1, 1))

    def stats(self) -> None:
        return None


def sim_run(engine: SimEngine, operation: Any, request: Any, replica: str, *_: Any) -> Reply:
    """`deployments.operations.run` for `SimEngine`: the reply's body names the picture."""
    key = (request.tenant or "", request.image_id)
    held = engine.pictures.holds(key)
    image_id, key, cached, outcome = engine.pictures.resolve(request, {})
    if outcome == "miss" and not held:  # else new content replaced the picture it held
        engine.on_embed(key, cached.content_digest)
    if request.image is not None and engine.rng.random() < engine.fail_rate:
        raise InjectedFailure("out of memory after the embed")
    return Reply(image_id, outcome, cached.content_digest.encode(), replica)


class NullMetrics:
    def record_stats(self, stats: object) -> None:
        pass

    def record_timings(self, operation: str, timings: object) -> None:
        pass

    def record_handoff(self, direction: str, seconds: float) -> None:
        pass
