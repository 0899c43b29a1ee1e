"""The per-replica caches: image embeddings (LRU, bounded by bytes and count), low-res
logits of earlier prompt sets (bounded by count and bytes, indexed per image), and the text
encoder's output per concept text (LRU, bounded by bytes).

Both are thread-safe. `collections.OrderedDict` gives the LRU order; no caching library
bounds entries by their byte size and also keeps a per-image index, hence this module.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from sam3_core.concept_model import TextEmbedding
from sam3_core.model import ImageEmbedding
from sam3_core.prompts import PromptSet, is_strict_subset


@dataclass
class CachedEmbedding:
    """An image's embedding, the SHA-256 of the bytes it was computed from, and when the
    latest request that sent these bytes came: `arrival` orders requests within one engine
    (larger is later), `version` between engines (a logical clock the owners stamp, carried
    with every hand-off: `deployments.ownership`). `handed_off`: obtained from another engine
    and not yet used here."""

    embedding: ImageEmbedding
    content_digest: str
    arrival: int = 0
    version: int = 0
    handed_off: bool = False

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes


class EmbeddingCache:
    """LRU of embeddings by key (any hashable; the engine's is (tenant, image_id)): a hit
    refreshes; evicts the least recently used until both the byte budget and the count limit
    hold. `on_evict(key, entry)` runs for every entry that leaves (evicted, or replaced by
    new content)."""

    def __init__(
        self,
        max_bytes: int,
        max_entries: int,
        on_evict: Callable[[Hashable, CachedEmbedding], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._on_evict = on_evict
        self._entries: OrderedDict[Hashable, CachedEmbedding] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, key: Hashable) -> CachedEmbedding | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def holds(self, key: Hashable, content_digest: str) -> bool:
        """Whether `key` holds that content now (without refreshing it)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.content_digest == content_digest

    def put(self, key: Hashable, entry: CachedEmbedding) -> bool:
        """Store `entry` (replacing any entry of that key); False if it alone is over budget."""
        return self._store(key, entry, latest_only=False)

    def keep_latest(self, key: Hashable, entry: CachedEmbedding) -> bool:
        """Store `entry` unless the content cached under `key` was sent by a later request
        (a larger `arrival`); for the content cached already, only note the later arrival.

        Returns whether `key` now holds `entry`'s content."""
        return self._store(key, entry, latest_only=True)

    def adopt(self, key: Hashable, entry: CachedEmbedding) -> bool:
        """Store `entry`, content another engine held, unless `key` holds content of the
        same or a later `version`; for the content cached already, only note the later
        `version`. Returns whether `key` now holds `entry`'s content."""
        return self._store(key, entry, latest_only=True, by_version=True)

    def _store(
        self,
        key: Hashable,
        entry: CachedEmbedding,
        *,
        latest_only: bool,
        by_version: bool = False,
    ) -> bool:
        dropped: list[tuple[Hashable, CachedEmbedding]] = []
        with self._lock:
            old = self._entries.get(key)
            if latest_only and old is not None:
                if old.content_digest == entry.content_digest:
                    old.arrival = max(old.arrival, entry.arrival)
                    old.version = max(old.version, entry.version)
                    self._entries.move_to_end(key)
                    return True
                if (old.version >= entry.version) if by_version else (old.arrival > entry.arrival):
                    return False
            if old is not None and (
                old.content_digest != entry.content_digest or entry.nbytes > self.max_bytes
            ):
                dropped.append((key, old))
            if old is not None:
                del self._entries[key]
                self._nbytes -= old.nbytes
            stored = entry.nbytes <= self.max_bytes
            if stored:
                while self._entries and (
                    self._nbytes + entry.nbytes > self.max_bytes
                    or len(self._entries) + 1 > self.max_entries
                ):
                    victim = self._entries.popitem(last=False)
                    self._nbytes -= victim[1].nbytes
                    self.evictions += 1
                    dropped.append(victim)
                self._entries[key] = entry
                self._nbytes += entry.nbytes
        # Outside the lock: the callback may take other locks. Callers key what they drop by
        # content (see `Segmenter`), so the order of these calls against new saves is moot.
        self._notify(dropped)
        return stored

    def peek(self, key: Hashable) -> CachedEmbedding | None:
        """The entry of `key`, without refreshing it."""
        with self._lock:
            return self._entries.get(key)

    def discard(self, key: Hashable, content_digest: str | None = None) -> bool:
        """Drop `key`'s entry (only if it holds `content_digest`, when given)."""
        with self._lock:
            old = self._entries.get(key)
            if old is None or content_digest not in (None, old.content_digest):
                return False
            del self._entries[key]
            self._nbytes -= old.nbytes
        self._notify([(key, old)])
        return True

    def _notify(self, dropped: list[tuple[Hashable, CachedEmbedding]]) -> None:
        if self._on_evict is not None:
            for key, entry in dropped:
                self._on_evict(key, entry)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def lru_order(self) -> list[Hashable]:
        """Least recently used first."""
        with self._lock:
            return list(self._entries)


@dataclass(frozen=True)
class CachedLogits:
    """Low-res logits of one prompt set: (P, L, L) float32, one map per prompt."""

    prompt_set: PromptSet
    logits: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.logits.nbytes)


class LogitsCache:
    """Logits keyed by `(image, prompt-set identity)`, oldest save evicted first; `image` is
    any hashable naming one picture (the engine's: tenant, image_id and content digest).

    `find_prior` picks the logits `load_logits_from_cache` seeds a decode with, among the
    entries of one image: a strict subset of the new prompt set with exactly one point fewer
    wins, the most recently saved first; otherwise the subset with the most points (most
    recent among equals); otherwise None.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._order: OrderedDict[tuple[Hashable, str], CachedLogits] = OrderedDict()
        self._by_image: dict[Hashable, OrderedDict[str, CachedLogits]] = {}
        self._nbytes = 0
        self._lock = threading.Lock()

    def put(self, image: Hashable, prompt_set: PromptSet, logits: np.ndarray) -> None:
        """Save (P, L, L) logits of `prompt_set`; saving the same set again refreshes it."""
        entry = CachedLogits(prompt_set=prompt_set, logits=logits)
        if entry.nbytes > self.max_bytes:
            return
        key = (image, prompt_set.identity())
        with self._lock:
            self._remove(key)
            while self._order and (
                len(self._order) + 1 > self.max_entries
                or self._nbytes + entry.nbytes > self.max_bytes
            ):
                self._remove(next(iter(self._order)))
            self._order[key] = entry
            self._by_image.setdefault(image, OrderedDict())[key[1]] = entry
            self._nbytes += entry.nbytes

    def find_prior(self, image: Hashable, prompt_set: PromptSet) -> np.ndarray | None:
        """(P, L, L) logits of the best earlier prompt set, or None (a miss)."""
        with self._lock:
            candidates = list(self._by_image.get(image, {}).values())
        wanted = prompt_set.point_count - 1
        best: CachedLogits | None = None
        for entry in reversed(candidates):  # most recently saved first
            if not is_strict_subset(entry.prompt_set, prompt_set):
                continue
            if entry.prompt_set.point_count == wanted:
                return entry.logits
            if best is None or entry.prompt_set.point_count > best.prompt_set.point_count:
                best = entry
        return None if best is None else best.logits

    def drop_image(self, image: Hashable) -> None:
        with self._lock:
            for prompt_id in list(self._by_image.get(image, ())):
                self._remove((image, prompt_id))

    def _remove(self, key: tuple[Hashable, str]) -> None:
        entry = self._order.pop(key, None)
        if entry is None:
            return
        self._nbytes -= entry.nbytes
        per_image = self._by_image[key[0]]
        del per_image[key[1]]
        if not per_image:
            del self._by_image[key[0]]

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._order)

    def entries_for(self, image: Hashable) -> list[CachedLogits]:
        """The saved prompt sets of `image`, oldest save first."""
        with self._lock:
            return list(self._by_image.get(image, {}).values())

    def count_for(self, image: Hashable) -> int:
        with self._lock:
            return len(self._by_image.get(image, ()))


class TextEmbeddingCache:
    """LRU of the text encoder's output by exact text (and whatever else the key holds: the
    engine's is (tenant, text)), bounded by bytes: a project's class names are asked for
    again and again, and a hit skips the text encoder."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, TextEmbedding] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, text: Hashable) -> TextEmbedding | None:
        with self._lock:
            entry = self._entries.get(text)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(text)
            return entry

    def put(self, text: Hashable, entry: TextEmbedding) -> None:
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(text, None)
            if old is not None:
                self._nbytes -= old.nbytes
            while self._entries and self._nbytes + entry.nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._nbytes -= evicted.nbytes
            self._entries[text] = entry
            self._nbytes += entry.nbytes

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, text: object) -> bool:
        return text in self._entries
