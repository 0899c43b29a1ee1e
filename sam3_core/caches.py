"""The per-replica caches: image embeddings (LRU, bounded by bytes and count), low-res
logits of earlier prompt sets (bounded by count and bytes, indexed per image), and the text
encoder's output per concept text (LRU, bounded by bytes).

Both are thread-safe. `collections.OrderedDict` gives the LRU order; no caching library
bounds entries by their byte size and also keeps a per-image index, hence this module.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sam3_core.concept_model import TextEmbedding
from sam3_core.model import ImageEmbedding
from sam3_core.prompts import PromptSet, is_strict_subset


@dataclass(frozen=True)
class CachedEmbedding:
    """An image's embedding and the SHA-256 of the bytes it was computed from."""

    embedding: ImageEmbedding
    content_digest: str

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes


class EmbeddingCache:
    """LRU of embeddings: a hit refreshes; evicts the least recently used until both the
    byte budget and the count limit hold. `on_evict(image_id)` runs for every entry that
    leaves (evicted or replaced by new content)."""

    def __init__(
        self,
        max_bytes: int,
        max_entries: int,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._on_evict = on_evict
        self._entries: OrderedDict[str, CachedEmbedding] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, image_id: str) -> CachedEmbedding | None:
        with self._lock:
            entry = self._entries.get(image_id)
            if entry is not None:
                self._entries.move_to_end(image_id)
            return entry

    def put(self, image_id: str, entry: CachedEmbedding) -> bool:
        """Store `entry` (replacing any entry of that id); False if it alone is over budget."""
        if entry.nbytes > self.max_bytes:
            self.discard(image_id)
            return False
        dropped: list[str] = []
        with self._lock:
            old = self._entries.pop(image_id, None)
            if old is not None:
                self._nbytes -= old.nbytes
                if old.content_digest != entry.content_digest:
                    dropped.append(image_id)
            while self._entries and (
                self._nbytes + entry.nbytes > self.max_bytes
                or len(self._entries) + 1 > self.max_entries
            ):
                victim, evicted = self._entries.popitem(last=False)
                self._nbytes -= evicted.nbytes
                self.evictions += 1
                dropped.append(victim)
            self._entries[image_id] = entry
            self._nbytes += entry.nbytes
        self._notify(dropped)
        return True

    def discard(self, image_id: str) -> None:
        with self._lock:
            old = self._entries.pop(image_id, None)
            if old is not None:
                self._nbytes -= old.nbytes
        if old is not None:
            self._notify([image_id])

    def _notify(self, image_ids: list[str]) -> None:
        if self._on_evict is not None:
            for image_id in image_ids:
                self._on_evict(image_id)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._entries

    def image_ids(self) -> list[str]:
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
    """Logits keyed by `(image_id, prompt-set identity)`, oldest save evicted first.

    `find_prior` applies SPEC §4's rule among the entries of one image: a strict subset of
    the new prompt set with exactly one point fewer wins, the most recently saved first;
    otherwise the subset with the most points (most recent among equals); otherwise None.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._order: OrderedDict[tuple[str, str], CachedLogits] = OrderedDict()
        self._by_image: dict[str, OrderedDict[str, CachedLogits]] = {}
        self._nbytes = 0
        self._lock = threading.Lock()

    def put(self, image_id: str, prompt_set: PromptSet, logits: np.ndarray) -> None:
        """Save (P, L, L) logits of `prompt_set`; saving the same set again refreshes it."""
        entry = CachedLogits(prompt_set=prompt_set, logits=logits)
        if entry.nbytes > self.max_bytes:
            return
        key = (image_id, prompt_set.identity())
        with self._lock:
            self._remove(key)
            while self._order and (
                len(self._order) + 1 > self.max_entries
                or self._nbytes + entry.nbytes > self.max_bytes
            ):
                self._remove(next(iter(self._order)))
            self._order[key] = entry
            self._by_image.setdefault(image_id, OrderedDict())[key[1]] = entry
            self._nbytes += entry.nbytes

    def find_prior(self, image_id: str, prompt_set: PromptSet) -> np.ndarray | None:
        """(P, L, L) logits of the best earlier prompt set, or None (a miss)."""
        with self._lock:
            candidates = list(self._by_image.get(image_id, {}).values())
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

    def drop_image(self, image_id: str) -> None:
        with self._lock:
            for prompt_id in list(self._by_image.get(image_id, ())):
                self._remove((image_id, prompt_id))

    def _remove(self, key: tuple[str, str]) -> None:
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

    def count_for(self, image_id: str) -> int:
        with self._lock:
            return len(self._by_image.get(image_id, ()))


class TextEmbeddingCache:
    """LRU of the text encoder's output by exact text, bounded by bytes: a project's class
    names are asked for again and again, and a hit skips the text encoder."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, TextEmbedding] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, text: str) -> TextEmbedding | None:
        with self._lock:
            entry = self._entries.get(text)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(text)
            return entry

    def put(self, text: str, entry: TextEmbedding) -> None:
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
