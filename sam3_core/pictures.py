"""Which picture each image holds on this engine: the embedding cache and the logits saved
for each picture, in the order requests arrived, with embeds in progress shared, and pictures
handed to and from other engines.

An image is keyed by (tenant, `image_id`); a picture is an image's content (its digest).
`Pictures` decides, the model embeds: `resolve` calls back `embed(bytes)` when a request's
picture must be computed. Every method is thread-safe.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from sam3_core.caches import CachedEmbedding, EmbeddingCache, LogitsCache
from sam3_core.calls import CacheOutcome, ImageRequest
from sam3_core.errors import ImageBytesNeededError, ImageNotCachedError, InvalidImageError
from sam3_core.handoff import ImageState, moved, portable
from sam3_core.images import check_image_id, content_id
from sam3_core.model import ImageEmbedding

logger = logging.getLogger(__name__)

# What the caches key an image by: (tenant, image_id); tenant "" without API keys.
ImageKey = tuple[str, str]


class Pictures:
    """The images this engine holds (see the module's docstring).

    Args:
        embed: the picture's embedding from the image file's bytes, as it is to be stored
            (on `device`, in `store_dtype`); may raise the engine's image errors.
        needs_trunk: whether the engine serves concepts (a picture must carry the trunk).

    `stamp()` gives each request that sends bytes its picture's version, larger than every
    version this engine has seen: a counter of its own, or the replica's logical clock
    (`deployments.ownership.Clock.tick`), which hand-offs advance past the versions they carry.
    """

    def __init__(
        self,
        embeddings: EmbeddingCache,
        logits: LogitsCache,
        embed: Callable[[bytes], ImageEmbedding],
        *,
        device: torch.device,
        store_dtype: torch.dtype,
        needs_trunk: bool,
        max_image_id_length: int,
    ) -> None:
        self.embeddings = embeddings
        self.logits = logits
        self._embed = embed
        self._device = device
        self._store_dtype = store_dtype
        self._needs_trunk = needs_trunk
        self.max_image_id_length = max_image_id_length
        self._inflight: dict[tuple[ImageKey, str], _Pending] = {}
        self._inflight_lock = threading.Lock()
        self._arrivals = itertools.count(1)
        self.stamp: Callable[[], int] = itertools.count(1).__next__
        self._counter_lock = threading.Lock()
        self.hits = self.misses = self.handoffs = 0

    def resolve(
        self, request: ImageRequest, timings: dict[str, float]
    ) -> tuple[str, ImageKey, CachedEmbedding, CacheOutcome]:
        """The request's image id, cache key and embedding, computed first where needed
        (then `timings["embed"]` says how long that took).

        Which content an id holds: the content of the request that reached this engine last
        among those that sent bytes under it (a click by id alone is answered from it, once
        embeds that reached the engine before the click are done), whatever order their
        embeds finish in. A request whose bytes fail to decode changes nothing."""
        image, image_id = request.image, request.image_id
        if image_id is not None:
            check_image_id(image_id, max_length=self.max_image_id_length)
        arrival = next(self._arrivals)
        tenant = request.tenant or ""
        if image is None:
            if image_id is None:
                raise InvalidImageError("send the image, or the image_id of an embedded image")
            key = (tenant, image_id)
            self._await_embeds_before(key, arrival)
            cached = self.embeddings.get(key)
            digest = request.image_digest
            if digest is not None:  # the caller has the bytes, and sends them if needed
                if cached is None or cached.content_digest != digest:
                    raise ImageBytesNeededError(f"send the bytes of {image_id!r}")
                # Sending the same bytes again is a write too: the picture is newest again.
                self.embeddings.keep_latest(
                    key, CachedEmbedding(cached.embedding, digest, arrival, self.stamp())
                )
            if cached is None:
                self._count(hit=False)
                raise ImageNotCachedError(
                    f"image_id {image_id!r} is not cached on this replica: send the image again"
                )
            return image_id, key, cached, self._use(cached)
        digest = request.image_digest or content_id(image)
        image_id = image_id or digest
        key = (tenant, image_id)
        started = time.perf_counter()
        cached, outcome = self._embed_once(image, key, digest, arrival, self.stamp())
        if outcome == "miss":
            timings["embed"] = time.perf_counter() - started
        return image_id, key, cached, outcome

    def _embed_once(
        self, image: bytes, key: ImageKey, digest: str, arrival: int, version: int
    ) -> tuple[CachedEmbedding, CacheOutcome]:
        """The embedding of `image` under `key`: cached, computed by a concurrent request
        for the same content, or computed here; kept if this is the latest content."""
        with self._inflight_lock:
            # Under the lock, a finished embed is in the cache or still in `_inflight`.
            cached = self.embeddings.get(key)
            pending = self._inflight.get((key, digest))
            owner = pending is None and (cached is None or cached.content_digest != digest)
            if owner:
                pending = self._inflight[(key, digest)] = _Pending(arrival)
        if not owner:
            if pending is not None:
                cached = pending.future.result()
            assert cached is not None
            self.embeddings.keep_latest(
                key, CachedEmbedding(cached.embedding, digest, arrival, version)
            )
            return cached, self._use(cached)
        assert pending is not None
        try:
            cached = CachedEmbedding(self._embed(image), digest, arrival, version)
            if (
                not self.embeddings.keep_latest(key, cached)
                and cached.nbytes > self.embeddings.max_bytes
            ):
                logger.warning(
                    "embedding of %s (%d bytes) is over the cache budget; not cached",
                    key[1],
                    cached.nbytes,
                )
            self._count(hit=False)
            pending.future.set_result(cached)
            return cached, "miss"
        except BaseException as exc:
            pending.future.set_exception(exc)
            raise
        finally:
            with self._inflight_lock:
                del self._inflight[(key, digest)]

    def _await_embeds_before(self, key: ImageKey, arrival: int) -> None:
        """Wait for the embeds under `key` that reached the engine before `arrival`."""
        with self._inflight_lock:
            earlier = [
                pending.future
                for (pending_key, _), pending in self._inflight.items()
                if pending_key == key and pending.arrival < arrival
            ]
        for future in earlier:
            future.exception()  # done; a failed embed changed nothing

    def _use(self, cached: CachedEmbedding) -> CacheOutcome:
        """Count a request served from `cached`: the first one after a hand-off is a
        "handoff", every other a "hit"."""
        with self._counter_lock:
            if cached.handed_off:
                cached.handed_off = False
                self.handoffs += 1
                return "handoff"
            self.hits += 1
            return "hit"

    def _count(self, *, hit: bool) -> None:
        with self._counter_lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def image_keys(self) -> list[ImageKey]:
        """The keys of the images cached or being embedded, most recently used first (those
        being embedded before all)."""
        with self._inflight_lock:
            pending = [key for key, _ in self._inflight]
        cached = self.embeddings.lru_order()[::-1]
        return list(dict.fromkeys(pending[::-1] + cached))

    def holds(self, key: ImageKey, content_digest: str | None = None) -> bool:
        """Whether `key` holds a picture (that picture, when `content_digest` is given)."""
        cached = self.embeddings.peek(key)
        return cached is not None and content_digest in (None, cached.content_digest)

    def image_version(self, key: ImageKey) -> tuple[str, int] | None:
        """(content digest, version) of the picture `key` holds, or None."""
        cached = self.embeddings.peek(key)
        return None if cached is None else (cached.content_digest, cached.version)

    def export_image(self, key: ImageKey, content_digest: str | None = None) -> ImageState | None:
        """Everything kept about `key`'s picture (only if it is `content_digest`, when given),
        for another engine; None when there is no such picture. Like a click by id, it waits
        for embeds under `key` that reached the engine before it. May block."""
        self._await_embeds_before(key, next(self._arrivals))
        cached = self.embeddings.get(key)
        if cached is None or content_digest not in (None, cached.content_digest):
            return None
        return ImageState(
            content_digest=cached.content_digest,
            version=cached.version,
            embedding=portable(cached.embedding),
            logits=tuple(self.logits.entries_for((key, cached.content_digest))),
        )

    def adopt_image(self, key: ImageKey, state: ImageState) -> bool:
        """Keep a picture another engine held under `key`, with its saved logits, unless
        this engine is computing content for `key` right now or holds content of it of the
        same or a later `version`: a handed-off picture never replaces newer content. The
        same picture already held gains the other engine's saved logits.

        Returns whether `key` now holds `state`'s picture; the first request served from it
        reports "handoff"."""
        if self._needs_trunk and state.embedding.trunk is None:
            return False  # from an engine without concepts: concept queries need the trunk
        entry = CachedEmbedding(
            moved(state.embedding, self._device, self._store_dtype),
            state.content_digest,
            version=state.version,
            handed_off=True,
        )
        with self._inflight_lock:
            if any(pending_key == key for pending_key, _ in self._inflight):
                return False
            entry.arrival = next(self._arrivals)
            if not self.embeddings.adopt(key, entry):
                return False
        picture = (key, state.content_digest)
        for saved in state.logits:
            self.logits.put(picture, saved.prompt_set, saved.logits)
        if not self.embeddings.holds(key, state.content_digest):  # replaced meanwhile
            self.logits.drop_image(picture)
        return True

    def drop_image(self, key: ImageKey, content_digest: str | None = None) -> bool:
        """Forget `key`'s picture and its logits (only if it is `content_digest`, when
        given); returns whether something was dropped."""
        return self.embeddings.discard(key, content_digest)


@dataclass
class _Pending:
    """An embed in progress: `arrival` of the request computing it, and its result."""

    arrival: int
    future: Future[CachedEmbedding] = field(default_factory=Future)
