import numpy as np
import torch

from sam3_core.caches import CachedEmbedding, EmbeddingCache, LogitsCache
from sam3_core.model import ImageEmbedding
from sam3_core.prompts import PromptSet


def embedding(nbytes: int, digest: str = "d") -> CachedEmbedding:
    """An embedding of exactly `nbytes` (float32: nbytes divisible by 12)."""
    n = nbytes // 12
    t = torch.zeros(n)
    return CachedEmbedding(ImageEmbedding(t, (t.clone(), t.clone()), (1, 1)), digest)


class TestEmbeddingCache:
    def test_lru_order_and_hit_refreshes(self):
        cache = EmbeddingCache(max_bytes=10**6, max_entries=3)
        for name in "abc":
            cache.put(name, embedding(120))
        assert cache.get("a") is not None  # a becomes the most recent
        cache.put("d", embedding(120))
        assert cache.lru_order() == ["c", "a", "d"]
        assert "b" not in cache and cache.evictions == 1

    def test_byte_budget_is_never_exceeded(self):
        cache = EmbeddingCache(max_bytes=1200, max_entries=100)
        rng = np.random.default_rng(0)
        for i in range(200):
            cache.put(f"img{i}", embedding(12 * int(rng.integers(1, 60))))
            assert cache.nbytes <= 1200
            assert cache.nbytes == sum(cache.get(k).nbytes for k in cache.lru_order())
        assert cache.evictions > 0

    def test_count_limit(self):
        cache = EmbeddingCache(max_bytes=10**9, max_entries=2)
        for name in "abcd":
            cache.put(name, embedding(12))
        assert cache.lru_order() == ["c", "d"]

    def test_entry_over_budget_is_not_stored_and_replaces_nothing_stale(self):
        dropped = []
        cache = EmbeddingCache(
            max_bytes=120, max_entries=5, on_evict=lambda key, _: dropped.append(key)
        )
        cache.put("a", embedding(120, "old"))
        assert not cache.put("a", embedding(240, "new"))
        assert "a" not in cache and dropped == ["a"] and cache.nbytes == 0

    def test_eviction_and_new_content_notify(self):
        dropped = []
        cache = EmbeddingCache(
            max_bytes=240, max_entries=5, on_evict=lambda key, _: dropped.append(key)
        )
        cache.put("a", embedding(120, "x"))
        cache.put("a", embedding(120, "x"))  # same content again: nothing dropped
        assert dropped == []
        cache.put("a", embedding(120, "y"))  # new content: old logits must go
        assert dropped == ["a"]
        cache.put("b", embedding(120))
        cache.put("c", embedding(120))
        assert dropped == ["a", "a"]


def ps(*points: tuple[float, float], box: bool = False) -> PromptSet:
    prompt: dict = {"points": [{"x": x, "y": y, "positive": True} for x, y in points]}
    if box:
        prompt["box"] = {"x": 5, "y": 5, "width": 4, "height": 4}
    return PromptSet.model_validate([prompt])


def logits(tag: float) -> np.ndarray:
    return np.full((1, 4, 4), tag, np.float32)


class TestLogitsCache:
    def test_exactly_one_point_fewer_wins_over_larger_subset_order(self):
        cache = LogitsCache(max_entries=10, max_bytes=10**6)
        cache.put("img", ps((1, 1), (2, 2)), logits(2))  # 2 points: exactly one fewer
        cache.put("img", ps((1, 1)), logits(1))  # newer, but 1 point
        assert cache.find_prior("img", ps((1, 1), (2, 2), (3, 3)))[0, 0, 0] == 2

    def test_newest_first_among_one_fewer(self):
        cache = LogitsCache(max_entries=10, max_bytes=10**6)
        cache.put("img", ps((1, 1), (2, 2)), logits(1))
        cache.put("img", ps((1, 1), (3, 3)), logits(2))
        assert cache.find_prior("img", ps((1, 1), (2, 2), (3, 3)))[0, 0, 0] == 2
        cache.put("img", ps((1, 1), (2, 2)), logits(3))  # saving again refreshes it
        assert cache.find_prior("img", ps((1, 1), (2, 2), (3, 3)))[0, 0, 0] == 3

    def test_largest_subset_otherwise(self):
        cache = LogitsCache(max_entries=10, max_bytes=10**6)
        cache.put("img", ps((1, 1), (2, 2)), logits(2))
        cache.put("img", ps((1, 1)), logits(1))
        new = ps((1, 1), (2, 2), (3, 3), (4, 4))
        assert cache.find_prior("img", new)[0, 0, 0] == 2

    def test_equal_sets_never_match_and_no_match_is_a_miss(self):
        cache = LogitsCache(max_entries=10, max_bytes=10**6)
        cache.put("img", ps((1, 1), (2, 2)), logits(1))
        assert cache.find_prior("img", ps((1, 1), (2, 2))) is None
        assert cache.find_prior("img", ps((5, 5), (6, 6))) is None
        assert cache.find_prior("img", ps((1, 1), (2, 2), box=True)) is None
        assert cache.find_prior("other", ps((1, 1), (2, 2), (3, 3))) is None

    def test_images_are_apart(self):
        cache = LogitsCache(max_entries=10, max_bytes=10**6)
        cache.put("a", ps((1, 1)), logits(1))
        assert cache.find_prior("b", ps((1, 1), (2, 2))) is None
        assert cache.find_prior("a", ps((1, 1), (2, 2)))[0, 0, 0] == 1

    def test_count_and_byte_limits_evict_oldest(self):
        cache = LogitsCache(max_entries=3, max_bytes=10**6)
        for i in range(5):
            cache.put("img", ps((i, i)), logits(i))
        assert len(cache) == 3 and cache.find_prior("img", ps((0, 0), (9, 9))) is None
        small = LogitsCache(max_entries=100, max_bytes=2 * 64)
        for i in range(5):
            small.put("img", ps((i, i)), logits(i))
            assert small.nbytes <= 128
        assert len(small) == 2

    def test_drop_image(self):
        cache = LogitsCache(max_entries=10, max_bytes=10**6)
        cache.put("a", ps((1, 1)), logits(1))
        cache.put("a", ps((2, 2)), logits(2))
        cache.put("b", ps((1, 1)), logits(3))
        cache.drop_image("a")
        assert cache.count_for("a") == 0 and cache.count_for("b") == 1 and len(cache) == 1
        assert cache.nbytes == logits(0).nbytes
