"""Which picture an image holds (`sam3_core/pictures.py`), through the engine: content sent
later wins whatever order embeds end in, logits follow content, tenants are apart, a digest
alone names held content."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sam3_core import EmbedRequest, Segmenter, SegmentRequest
from sam3_core.errors import (
    ImageBytesNeededError,
    ImageNotCachedError,
    InvalidImageError,
)
from sam3_core.images import content_id
from tests.conftest import encode_image, random_pixels
from tests.unit.test_engine import clicks, images, logits_saved


@pytest.fixture
def make_segmenter(make_segmenter):
    """The interactive-only build, as in tests/unit/test_engine.py."""

    def make(**overrides: object) -> Segmenter:
        return make_segmenter(**{"concepts": False, **overrides})

    return make


class GatedEncode:
    """Makes the engine's embeds of chosen pictures wait for `release(digest)`."""

    def __init__(self, engine: Segmenter, monkeypatch) -> None:
        self.gates: dict[tuple[int, int], threading.Event] = {}
        encode = engine.model.encode

        def gated(image):
            gate = self.gates.get(tuple(image.shape[-2:]))
            if gate is not None:
                assert gate.wait(30), "gate never opened"
            return encode(image)

        monkeypatch.setattr(engine.model, "encode", gated)

    def hold(self, height: int, width: int) -> threading.Event:
        self.gates[(height, width)] = threading.Event()
        return self.gates[(height, width)]


class TestContent:
    """An id's content, its logits and the order of requests (issue: caches that never serve
    the wrong picture)."""

    def test_logits_of_an_earlier_picture_never_seed_the_new_one(self, segmenter):
        old, new = images(2)
        segmenter.embed(EmbedRequest(image=old, image_id="doc"))
        first = SegmentRequest(image_id="doc", prompts=clicks((5, 5)), save_logits_to_cache=True)
        job = segmenter.prepare(first)
        decoded = segmenter.decode(job)
        # The id gets new bytes while that click is being decoded ...
        segmenter.embed(EmbedRequest(image=new, image_id="doc"))
        segmenter.finish(job, decoded)  # ... and only then saves the old picture's logits.
        refined = segmenter.segment(
            SegmentRequest(
                image_id="doc", prompts=clicks((5, 5), (30, 30)), load_logits_from_cache=True
            )
        )
        assert refined.logits_cache == "miss"
        assert logits_saved(segmenter, "doc", old) == 0

    def test_the_logits_cache_keys_by_content(self, segmenter):
        (data,) = images(1)
        segmenter.segment(
            SegmentRequest(
                image=data, image_id="p", prompts=clicks((5, 5)), save_logits_to_cache=True
            )
        )
        again = SegmentRequest(
            image=data, image_id="p", prompts=clicks((5, 5), (9, 9)), load_logits_from_cache=True
        )
        assert segmenter.segment(again).logits_cache == "hit"

    def test_the_request_that_arrived_last_wins_whichever_embed_ends_first(
        self, make_segmenter, monkeypatch
    ):
        engine = make_segmenter()
        gates = GatedEncode(engine, monkeypatch)
        first = encode_image(random_pixels(1, 60, 80))
        last = encode_image(random_pixels(2, 70, 90))
        slow = gates.hold(60, 80)
        with ThreadPoolExecutor(3) as pool:
            a = pool.submit(engine.embed, EmbedRequest(image=first, image_id="same"))
            time.sleep(0.2)
            b = pool.submit(engine.embed, EmbedRequest(image=last, image_id="same"))
            assert b.result(30).embedding_cache == "miss"  # the later request, finished first
            slow.set()
            assert a.result(30).embedding_cache == "miss"
        assert engine.embeddings.get(("", "same")).content_digest == content_id(last)
        by_id = engine.segment(SegmentRequest(image_id="same", prompts=clicks((5, 5))))
        assert by_id.decoded.masks.shape[1:] == (70, 90)

    def test_a_click_by_id_waits_for_content_sent_before_it(self, make_segmenter, monkeypatch):
        engine = make_segmenter()
        gates = GatedEncode(engine, monkeypatch)
        old = encode_image(random_pixels(1, 60, 80))
        new = encode_image(random_pixels(2, 70, 90))
        engine.embed(EmbedRequest(image=old, image_id="same"))
        gate = gates.hold(70, 90)
        with ThreadPoolExecutor(2) as pool:
            resend = pool.submit(engine.embed, EmbedRequest(image=new, image_id="same"))
            time.sleep(0.2)
            click = pool.submit(
                engine.segment, SegmentRequest(image_id="same", prompts=clicks((5, 5)))
            )
            time.sleep(0.2)
            gate.set()
            assert resend.result(30).embedding_cache == "miss"
            assert click.result(30).decoded.masks.shape[1:] == (70, 90)

    def test_a_bad_resend_changes_nothing(self, segmenter):
        (good,) = images(1)
        segmenter.embed(EmbedRequest(image=good, image_id="keep"))
        with pytest.raises(InvalidImageError):
            segmenter.embed(EmbedRequest(image=b"garbage", image_id="keep"))
        hit = segmenter.segment(SegmentRequest(image_id="keep", prompts=clicks((3, 3))))
        assert hit.embedding_cache == "hit"

    def test_an_embed_that_ends_between_two_looks_is_not_computed_twice(
        self, make_segmenter, monkeypatch
    ):
        """The second request looked at the cache before the first embed ended and at the
        in-flight table after: it must still find one or the other."""
        engine = make_segmenter()
        gates = GatedEncode(engine, monkeypatch)
        data = encode_image(random_pixels(3, 60, 80))
        release, done = gates.hold(60, 80), threading.Event()
        get = engine.embeddings.get
        second: list[threading.Thread] = []

        def get_then_let_the_first_finish(key):
            found = get(key)
            if second and threading.current_thread() is second[0] and found is None:
                release.set()
                done.wait(1.0)  # it cannot finish while this look holds the in-flight lock
            return found

        monkeypatch.setattr(engine.embeddings, "get", get_then_let_the_first_finish)

        def first() -> str:
            try:
                return engine.embed(EmbedRequest(image=data)).embedding_cache
            finally:
                done.set()

        def then() -> str:
            second.append(threading.current_thread())
            return engine.embed(EmbedRequest(image=data)).embedding_cache

        with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(1) as two:
            a = one.submit(first)
            time.sleep(0.2)
            b = two.submit(then)
            assert (a.result(30), b.result(30)) == ("miss", "hit")
        assert engine.stats().embedding_cache_misses == 1


class TestTenants:
    def test_keys_are_tenants_of_their_own_images(self, segmenter):
        mine, theirs = images(2)
        segmenter.embed(EmbedRequest(image=mine, image_id="x", tenant="alice"))
        with pytest.raises(ImageNotCachedError):
            segmenter.segment(SegmentRequest(image_id="x", tenant="bob", prompts=clicks((3, 3))))
        assert (
            segmenter.embed(EmbedRequest(image=theirs, image_id="x", tenant="bob")).embedding_cache
            == "miss"
        )
        alice = segmenter.segment(
            SegmentRequest(image_id="x", tenant="alice", prompts=clicks((3, 3)))
        )
        alone = segmenter.segment(SegmentRequest(image=mine, prompts=clicks((3, 3))))
        assert np.array_equal(alice.decoded.masks, alone.decoded.masks)
        with pytest.raises(ImageNotCachedError):  # and without a key, neither is visible
            segmenter.segment(SegmentRequest(image_id="x", prompts=clicks((3, 3))))


class TestDigestFirst:
    """A request may name its image by content digest alone; the bytes follow if needed."""

    def test_held_content_is_a_hit_other_content_asks_for_the_bytes(self, segmenter):
        old, new = images(2)
        segmenter.embed(EmbedRequest(image=old, image_id="d"))
        held = SegmentRequest(image_id="d", image_digest=content_id(old), prompts=clicks((3, 3)))
        assert segmenter.segment(held).embedding_cache == "hit"
        with pytest.raises(ImageBytesNeededError):
            segmenter.segment(
                SegmentRequest(image_id="d", image_digest=content_id(new), prompts=clicks((3, 3)))
            )
        with pytest.raises(ImageBytesNeededError):
            segmenter.embed(EmbedRequest(image_id="never", image_digest=content_id(new)))
        resent = SegmentRequest(image=new, image_id="d", prompts=clicks((3, 3)))
        assert segmenter.segment(resent).embedding_cache == "miss"
