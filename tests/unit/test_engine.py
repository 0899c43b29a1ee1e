from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sam3_core import EmbedRequest, Segmenter, SegmentRequest
from sam3_core import engine as engine_module
from sam3_core.errors import (
    ImageNotCachedError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidImageIdError,
    InvalidPromptError,
    MaskBudgetError,
)
from sam3_core.images import content_id
from sam3_core.prompts import PromptSet
from tests.conftest import encode_image, random_pixels

# The tiny model's embedding: 64x16x16 + 8x64x64 + 16x32x32 float32.
EMBEDDING_BYTES = (64 * 16 * 16 + 8 * 64 * 64 + 16 * 32 * 32) * 4
# What serving concepts adds per image: the trunk's output, 64x16x16 float32.
TRUNK_BYTES = 64 * 16 * 16 * 4


@pytest.fixture
def make_segmenter(make_segmenter):
    """These tests are about the interactive engine and its caches: the interactive-only build
    (whose embedding sizes they count); tests/unit/test_concepts.py covers concepts."""

    def make(**overrides: object) -> Segmenter:
        return make_segmenter(**{"concepts": False, **overrides})

    return make


def clicks(*xy: tuple[float, float], positive: bool = True) -> PromptSet:
    return PromptSet.model_validate(
        {"points": [{"x": x, "y": y, "positive": positive} for x, y in xy]}
    )


def logits_saved(engine: Segmenter, image_id: str, data: bytes) -> int:
    """Logits entries of that picture (the id's key without API keys, and its content)."""
    return engine.logits.count_for((("", image_id), content_id(data)))


def images(n: int) -> list[bytes]:
    return [encode_image(random_pixels(100 + i)) for i in range(n)]


class TestEmbed:
    def test_content_id_and_hits(self, segmenter):
        (data,) = images(1)
        first = segmenter.embed(EmbedRequest(image=data))
        assert first.image_id == content_id(data) and first.embedding_cache == "miss"
        assert segmenter.embed(EmbedRequest(image=data)).embedding_cache == "hit"
        assert segmenter.embed(EmbedRequest(image_id=first.image_id)).embedding_cache == "hit"
        assert (
            segmenter.embed(EmbedRequest(image=data, image_id=first.image_id)).embedding_cache
            == "hit"
        )

    def test_embedding_is_what_decoding_needs_only(self, segmenter):
        (data,) = images(1)
        segmenter.embed(EmbedRequest(image=data, image_id="a"))
        assert segmenter.stats().embedding_cache_bytes == EMBEDDING_BYTES

    def test_with_concepts_the_embedding_adds_the_trunk_output_only(self, make_segmenter):
        (data,) = images(1)
        engine = make_segmenter(concepts=True, embedding_cache_bytes=2**26)
        engine.embed(EmbedRequest(image=data, image_id="a"))
        assert engine.stats().embedding_cache_bytes == EMBEDDING_BYTES + TRUNK_BYTES

    def test_client_ids_are_kept(self, segmenter):
        (data,) = images(1)
        assert (
            segmenter.embed(EmbedRequest(image=data, image_id="project/img-7.jpg")).image_id
            == "project/img-7.jpg"
        )

    def test_concurrent_embeds_of_one_image_compute_once(self, segmenter):
        (data,) = images(1)
        barrier = threading.Barrier(8)

        def embed(_: int) -> str:
            barrier.wait()
            return segmenter.embed(EmbedRequest(image=data)).image_id

        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(embed, range(8)))
        assert len(ids) == 1
        assert segmenter.stats().embedding_cache_misses == 1


class TestSegment:
    def test_one_prediction_per_prompt_in_order(self, segmenter):
        (data,) = images(1)
        prompts = PromptSet.model_validate(
            [
                {"points": [{"x": 10, "y": 10, "positive": True}]},
                {"box": {"x": 80, "y": 60, "width": 50, "height": 40}},
                {},
            ]
        )
        result = segmenter.segment(SegmentRequest(image=data, prompts=prompts))
        assert len(result.decoded.masks) == 3 and result.decoded.masks.shape == (3, 120, 160)
        assert result.decoded.low_res_logits.shape == (3, 64, 64)
        alone = segmenter.segment(
            SegmentRequest(image=data, prompts=PromptSet.model_validate(prompts.prompts[1]))
        )
        assert np.array_equal(result.decoded.masks[1], alone.decoded.masks[0])

    def test_the_stages_give_what_segment_gives_and_only_decode_runs_the_model(
        self, segmenter, monkeypatch
    ):
        (data,) = images(1)
        segmenter.embed(EmbedRequest(image=data, image_id="s"))
        request = SegmentRequest(image_id="s", prompts=clicks((5, 5)), save_logits_to_cache=True)
        whole = segmenter.segment(request)
        calls = []
        decode = segmenter.model.decode
        monkeypatch.setattr(
            segmenter.model, "decode", lambda *a, **k: calls.append(1) or decode(*a, **k)
        )
        job = segmenter.prepare(request)
        assert not calls and job.image_id == "s" and job.embedding_cache == "hit"
        decoded = segmenter.decode(job)
        assert len(calls) == 1
        result = segmenter.finish(job, decoded)
        assert len(calls) == 1 and logits_saved(segmenter, "s", data) == 1
        assert np.array_equal(result.decoded.masks, whole.decoded.masks)
        assert np.array_equal(result.decoded.scores, whole.decoded.scores)

    def test_no_prompt_gives_one_prediction(self, segmenter):
        (data,) = images(1)
        assert len(segmenter.segment(SegmentRequest(image=data)).decoded.masks) == 1

    def test_id_only_needs_a_cached_embedding(self, segmenter):
        with pytest.raises(ImageNotCachedError, match="send the image again"):
            segmenter.segment(SegmentRequest(image_id="never-seen", prompts=clicks((1, 1))))
        with pytest.raises(InvalidImageError, match="send the image"):
            segmenter.segment(SegmentRequest(prompts=clicks((1, 1))))

    def test_id_only_after_embed_is_a_hit(self, segmenter):
        (data,) = images(1)
        image_id = segmenter.embed(EmbedRequest(image=data)).image_id
        result = segmenter.segment(SegmentRequest(image_id=image_id, prompts=clicks((5, 5))))
        assert result.embedding_cache == "hit" and result.image_id == image_id

    def test_new_content_under_a_known_id_is_re_embedded(self, segmenter, make_segmenter):
        old, new = images(2)
        segmenter.embed(EmbedRequest(image=old, image_id="doc"))
        segmenter.segment(
            SegmentRequest(image_id="doc", prompts=clicks((5, 5)), save_logits_to_cache=True)
        )
        result = segmenter.segment(
            SegmentRequest(image=new, image_id="doc", prompts=clicks((5, 5)))
        )
        assert result.embedding_cache == "miss"
        assert logits_saved(segmenter, "doc", old) == 0  # the old picture's logits are gone
        fresh = make_segmenter().segment(SegmentRequest(image=new, prompts=clicks((5, 5))))
        assert np.array_equal(result.decoded.masks, fresh.decoded.masks)
        hit = segmenter.segment(SegmentRequest(image=new, image_id="doc", prompts=clicks((5, 5))))
        assert hit.embedding_cache == "hit"


class TestCaches:
    def test_lru_by_bytes_and_eviction_drops_logits(self, make_segmenter):
        engine = make_segmenter(embedding_cache_bytes=int(EMBEDDING_BYTES * 2.5))
        a, b, c = images(3)
        id_a, id_b = (
            engine.embed(EmbedRequest(image=a)).image_id,
            engine.embed(EmbedRequest(image=b)).image_id,
        )
        # A click on a refreshes it: b becomes the least recently used.
        engine.segment(
            SegmentRequest(image_id=id_a, prompts=clicks((3, 3)), save_logits_to_cache=True)
        )
        engine.embed(EmbedRequest(image=c))
        assert ("", id_a) in engine.embeddings and ("", id_b) not in engine.embeddings
        assert engine.stats().embedding_cache_bytes <= engine.embeddings.max_bytes
        assert logits_saved(engine, id_a, a) == 1
        engine.embed(
            EmbedRequest(image=b)
        )  # now a is the least recently used: it goes, with its logits
        assert ("", id_a) not in engine.embeddings and logits_saved(engine, id_a, a) == 0
        assert engine.stats().embedding_cache_evictions == 2

    def test_embeds_on_the_cpu_hand_freed_memory_back(self, make_segmenter, monkeypatch):
        trims = []
        monkeypatch.setattr(engine_module, "release_freed_memory", lambda: trims.append(1))
        engine = make_segmenter(embedding_cache_bytes=2 * EMBEDDING_BYTES)
        for image in images(3):
            engine.embed(EmbedRequest(image=image))
        engine.embed(EmbedRequest(image=images(3)[2]))  # a hit: nothing was freed
        assert len(trims) == 3
        make_segmenter(release_freed_memory=False).embed(EmbedRequest(image=images(4)[3]))
        assert len(trims) == 3

    def test_count_limit(self, make_segmenter):
        engine = make_segmenter(embedding_cache_bytes=2**30, max_embedding_cache_size=2)
        for data in images(4):
            engine.embed(EmbedRequest(image=data))
        assert len(engine.embeddings) == 2

    def test_an_image_over_the_budget_is_served_but_not_kept(self, make_segmenter):
        engine = make_segmenter(embedding_cache_bytes=EMBEDDING_BYTES - 1)
        (data,) = images(1)
        result = engine.segment(SegmentRequest(image=data, prompts=clicks((2, 2))))
        assert len(result.decoded.masks) == 1 and len(engine.embeddings) == 0

    def test_logits_cache_round_trip_and_disable(self, make_segmenter):
        for disabled in (False, True):
            engine = make_segmenter(disable_logits_cache=disabled)
            (data,) = images(1)
            engine.segment(
                SegmentRequest(image=data, prompts=clicks((3, 3)), save_logits_to_cache=True)
            )
            second = engine.segment(
                SegmentRequest(
                    image=data, prompts=clicks((3, 3), (9, 9)), load_logits_from_cache=True
                )
            )
            assert second.logits_cache == (None if disabled else "hit")
            assert len(engine.logits) == (0 if disabled else 1)


class TestReducedPrecision:
    @pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
    def test_half_the_bytes_and_results_within_tolerance(self, make_segmenter, dtype):
        reference = make_segmenter()
        reduced = make_segmenter(embedding_dtype=dtype)
        worst_iou, worst_score = 1.0, 0.0
        for i, data in enumerate(images(6)):
            prompts = clicks((10 + 20 * i, 30), (90, 40 + 10 * i))
            a = reference.segment(SegmentRequest(image=data, prompts=prompts)).decoded
            b = reduced.segment(SegmentRequest(image=data, prompts=prompts)).decoded
            union = (a.masks | b.masks).sum()
            worst_iou = min(worst_iou, (a.masks & b.masks).sum() / union if union else 1.0)
            worst_score = max(worst_score, float(np.abs(a.scores - b.scores).max()))
        assert reduced.stats().embedding_cache_bytes * 2 == reference.stats().embedding_cache_bytes
        # The tolerance BENCHMARKS.md states for reduced-precision embeddings.
        assert worst_iou >= 0.98 and worst_score <= 0.01, (worst_iou, worst_score)


class TestBadInput:
    def test_each_case_has_its_error_and_the_caches_survive(self, segmenter):
        (good,) = images(1)
        image_id = segmenter.embed(EmbedRequest(image=good)).image_id
        before = segmenter.stats()
        jpeg = encode_image(random_pixels(1, 64, 64), "JPEG")
        cases = [
            (SegmentRequest(image=b"not an image", prompts=clicks((1, 1))), InvalidImageError),
            (SegmentRequest(image=jpeg[: len(jpeg) // 2]), InvalidImageError),
            (SegmentRequest(image=good, image_id="bad id!"), InvalidImageIdError),
            (
                SegmentRequest(image_id=image_id, prompts=clicks((float("nan"), 1))),
                InvalidPromptError,
            ),
            (
                SegmentRequest(
                    image_id=image_id,
                    prompts=PromptSet.model_validate(
                        {"box": {"x": 1, "y": 1, "width": -3, "height": 2}}
                    ),
                ),
                InvalidPromptError,
            ),
            (
                SegmentRequest(image_id=image_id, prompts=PromptSet.model_validate([{}] * 65)),
                InvalidPromptError,
            ),
        ]
        for request, error in cases:
            with pytest.raises(error):
                segmenter.segment(request)
        assert segmenter.stats().embedding_cache_bytes == before.embedding_cache_bytes
        assert segmenter.segment(SegmentRequest(image_id=image_id)).embedding_cache == "hit"

    def test_pixel_limit(self, make_segmenter):
        engine = make_segmenter(max_image_pixels=100 * 100)
        with pytest.raises(ImageTooLargeError):
            engine.embed(EmbedRequest(image=encode_image(random_pixels(0, 101, 100))))


class TestConcurrency:
    def test_many_threads_several_images_equal_sequential(self, make_segmenter):
        data = images(4)
        jobs = []
        for round_ in range(6):
            for i, image in enumerate(data):
                points = [(5 + 7 * i, 9 + 3 * round_), (60, 20 + i)]
                jobs.append((image, clicks(*points[: 1 + round_ % 2]), round_ % 3 == 0))

        def run(engine: Segmenter, job) -> tuple[np.ndarray, np.ndarray]:
            image, prompts, send_image = job
            request = SegmentRequest(
                image=image if send_image else None,
                image_id=None if send_image else content_id(image),
                prompts=prompts,
            )
            decoded = engine.segment(request).decoded
            return decoded.masks, decoded.scores

        sequential_engine = make_segmenter()
        for image in data:
            sequential_engine.embed(EmbedRequest(image=image))
        expected = [run(sequential_engine, job) for job in jobs]

        engine = make_segmenter()
        for image in data:
            engine.embed(EmbedRequest(image=image))
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda job: run(engine, job), jobs * 3))
        for (masks, scores), (want_masks, want_scores) in zip(got, expected * 3, strict=True):
            assert np.array_equal(masks, want_masks) and np.array_equal(scores, want_scores)


class TestMaskBudget:
    def test_past_the_budget_is_refused_before_any_model_call(self, make_segmenter, monkeypatch):
        engine = make_segmenter(max_mask_pixels=3 * 120 * 160)
        calls = []
        monkeypatch.setattr(engine.model, "encode", lambda *a: calls.append("encode"))
        monkeypatch.setattr(engine.model, "decode", lambda *a, **k: calls.append("decode"))
        (data,) = images(1)  # 120 x 160
        four = PromptSet.model_validate(
            [{"points": [{"x": 1, "y": i, "positive": True}]} for i in range(4)]
        )
        with pytest.raises(MaskBudgetError, match="SAM3_MAX_MASK_PIXELS"):
            engine.segment(SegmentRequest(image=data, prompts=four))
        assert calls == []

    def test_by_id_too_and_within_it_serves(self, make_segmenter):
        engine = make_segmenter(max_mask_pixels=3 * 120 * 160)
        (data,) = images(1)
        image_id = engine.embed(EmbedRequest(image=data)).image_id
        three = PromptSet.model_validate(
            [{"points": [{"x": 1, "y": i, "positive": True}]} for i in range(3)]
        )
        assert (
            len(engine.segment(SegmentRequest(image_id=image_id, prompts=three)).decoded.masks) == 3
        )
        four = PromptSet.model_validate([*three.prompts, three.prompts[0]])
        with pytest.raises(MaskBudgetError):
            engine.segment(SegmentRequest(image_id=image_id, prompts=four))

    def test_only_each_prompts_best_proposal_is_brought_to_full_size(self, segmenter, monkeypatch):
        shapes = []
        transforms = segmenter.model.predictor._transforms
        postprocess = transforms.postprocess_masks

        def recording(masks, orig_hw):
            shapes.append(tuple(masks.shape))
            return postprocess(masks, orig_hw)

        monkeypatch.setattr(transforms, "postprocess_masks", recording)
        (data,) = images(1)
        prompts = PromptSet.model_validate(
            [{"points": [{"x": 1, "y": i, "positive": True}]} for i in range(5)]
        )
        segmenter.segment(SegmentRequest(image=data, prompts=prompts))
        assert shapes == [(5, 1, 64, 64)]
