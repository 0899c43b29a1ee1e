"""An image handed from one engine to another (`sam3_core/handoff.py`, `Pictures.export_image`
/ `adopt_image`): the same masks and logits as on the engine that embedded it, never over newer
content of the id, and reported as "handoff" once."""

from __future__ import annotations

import pickle
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from deployments.ownership import Clock
from sam3_core import EmbedRequest, SegmentRequest
from sam3_core.calls import ConceptRequest
from sam3_core.concept_prompts import ConceptPrompt
from sam3_core.images import content_id
from tests.conftest import encode_image, random_pixels
from tests.unit.test_engine import clicks, images
from tests.unit.test_pictures import GatedEncode

KEY = ("", "photo")


def one_clock(*engines) -> None:
    """Engines that stamp versions from one logical clock, as replicas whose hand-off
    messages carry their clocks do (`deployments.ownership`)."""
    clock = Clock()
    for engine in engines:
        engine.pictures.stamp = clock.tick


def click(engine, prompts, **options):
    return engine.segment(SegmentRequest(image_id="photo", prompts=prompts, **options))


def test_the_adopting_engine_answers_as_the_one_that_embedded(make_segmenter):
    sender, receiver = make_segmenter(), make_segmenter()
    (data,) = images(1)
    sender.embed(EmbedRequest(image=data, image_id="photo"))
    first = click(sender, clicks((5, 5)), save_logits_to_cache=True)
    expected = click(sender, clicks((5, 5), (20, 9)), load_logits_from_cache=True)
    assert expected.logits_cache == "hit"

    state = sender.pictures.export_image(KEY)
    assert state is not None and state.content_digest == content_id(data)
    state = pickle.loads(pickle.dumps(state))  # as it crosses between replicas
    assert receiver.pictures.adopt_image(KEY, state)

    refined = click(receiver, clicks((5, 5), (20, 9)), load_logits_from_cache=True)
    assert refined.embedding_cache == "handoff"  # the first request served from it
    assert refined.logits_cache == "hit"  # the saved logits came along
    assert np.array_equal(refined.decoded.masks, expected.decoded.masks)
    assert np.array_equal(refined.decoded.low_res_logits, expected.decoded.low_res_logits)
    assert click(receiver, clicks((5, 5))).embedding_cache == "hit"
    again = click(receiver, clicks((5, 5)))
    assert np.array_equal(again.decoded.masks, first.decoded.masks)
    stats = receiver.stats()
    assert (stats.embedding_cache_handoffs, stats.embedding_cache_misses) == (1, 0)


def test_a_handed_off_picture_never_replaces_content_sent_later(make_segmenter):
    sender, receiver = make_segmenter(), make_segmenter()
    one_clock(sender, receiver)
    old, new = images(2)
    sender.embed(EmbedRequest(image=old, image_id="photo"))
    stale = sender.pictures.export_image(KEY)
    receiver.embed(EmbedRequest(image=new, image_id="photo"))  # sent after `old`
    assert not receiver.pictures.adopt_image(KEY, stale)
    assert receiver.pictures.holds(KEY, content_id(new))
    assert click(receiver, clicks((5, 5))).embedding_cache == "hit"


def test_content_sent_later_elsewhere_replaces_an_older_picture(make_segmenter):
    """Two replicas both got bytes under one id (routers disagreed for a moment): the
    owner keeps whichever was sent last, and the older picture's logits go with it."""
    owner, other = make_segmenter(), make_segmenter()
    one_clock(owner, other)
    old, new = images(2)
    owner.segment(
        SegmentRequest(
            image=old, image_id="photo", prompts=clicks((5, 5)), save_logits_to_cache=True
        )
    )
    other.embed(EmbedRequest(image=new, image_id="photo"))
    assert owner.pictures.adopt_image(KEY, other.pictures.export_image(KEY))
    assert owner.pictures.holds(KEY, content_id(new))
    assert owner.logits.count_for((KEY, content_id(old))) == 0
    expected = click(other, clicks((5, 5)))
    assert np.array_equal(click(owner, clicks((5, 5))).decoded.masks, expected.decoded.masks)


def test_sending_the_same_bytes_again_makes_them_the_newest_content(make_segmenter):
    """Finding 5 of the ownership issue: bytes re-sent under an id (by digest first, or in
    full) are the id's newest content, newer than a picture another engine got meanwhile;
    with wall clocks the digest-first path stored time 0 and lost to any picture."""
    owner, other = make_segmenter(), make_segmenter()
    one_clock(owner, other)
    first, second = images(2)
    owner.embed(EmbedRequest(image=first, image_id="photo"))
    other.embed(EmbedRequest(image=second, image_id="photo"))
    # The client goes back to the first picture: digest first, and the owner has it.
    owner.segment(
        SegmentRequest(image_id="photo", image_digest=content_id(first), prompts=clicks((5, 5)))
    )
    assert not owner.pictures.adopt_image(KEY, other.pictures.export_image(KEY))
    assert other.pictures.adopt_image(KEY, owner.pictures.export_image(KEY))
    assert other.pictures.holds(KEY, content_id(first))


def test_no_adoption_while_the_id_is_being_embedded(make_segmenter, monkeypatch):
    sender, receiver = make_segmenter(), make_segmenter()
    sender.embed(EmbedRequest(image=images(1)[0], image_id="photo"))
    state = sender.pictures.export_image(KEY)
    gates = GatedEncode(receiver, monkeypatch)
    gate = gates.hold(70, 90)
    new = encode_image(random_pixels(2, 70, 90))
    with ThreadPoolExecutor(1) as pool:
        embedding = pool.submit(receiver.embed, EmbedRequest(image=new, image_id="photo"))
        time.sleep(0.2)
        assert not receiver.pictures.adopt_image(KEY, state)  # the embed in progress is newer
        gate.set()
        embedding.result(30)
    assert click(receiver, clicks((5, 5))).decoded.masks.shape[1:] == (70, 90)


def test_export_waits_for_an_earlier_embed_and_names_the_content(make_segmenter, monkeypatch):
    engine = make_segmenter()
    gates = GatedEncode(engine, monkeypatch)
    gate = gates.hold(70, 90)
    data = encode_image(random_pixels(2, 70, 90))
    with ThreadPoolExecutor(2) as pool:
        embedding = pool.submit(engine.embed, EmbedRequest(image=data, image_id="photo"))
        time.sleep(0.2)
        exported = pool.submit(engine.pictures.export_image, KEY)
        time.sleep(0.2)
        assert not exported.done()
        gate.set()
        embedding.result(30)
        assert exported.result(30).content_digest == content_id(data)
    assert engine.pictures.export_image(KEY, content_digest="0" * 64) is None
    assert engine.pictures.export_image(("", "unknown")) is None


def test_drop_only_the_named_content(segmenter):
    (data,) = images(1)
    segmenter.embed(EmbedRequest(image=data, image_id="photo"))
    assert not segmenter.pictures.drop_image(KEY, content_digest="0" * 64)
    assert segmenter.pictures.image_keys() == [KEY]
    assert segmenter.pictures.drop_image(KEY, content_digest=content_id(data))
    assert segmenter.pictures.image_keys() == [] and not segmenter.pictures.holds(KEY)


def test_stored_in_the_receivers_precision(make_segmenter):
    sender = make_segmenter(embedding_dtype="bfloat16")
    receiver = make_segmenter()
    sender.embed(EmbedRequest(image=images(1)[0], image_id="photo"))
    assert receiver.pictures.adopt_image(KEY, sender.pictures.export_image(KEY))
    assert receiver.embeddings.get(KEY).embedding.image_embed.dtype == torch.float32


def test_concept_queries_on_a_handed_off_picture_need_no_trunk_pass(make_segmenter):
    sender, receiver = make_segmenter(), make_segmenter()
    (data,) = images(1)
    sender.embed(EmbedRequest(image=data, image_id="photo"))
    query = ConceptRequest(
        image_id="photo", prompts=(ConceptPrompt(text="cat"),), output_prob_thresh=0.0
    )
    expected = sender.concept_segment(query)
    assert receiver.pictures.adopt_image(
        KEY, pickle.loads(pickle.dumps(sender.pictures.export_image(KEY)))
    )
    found = receiver.concept_segment(query)
    assert found.embedding_cache == "handoff" and receiver.stats().embedding_cache_misses == 0
    (ours,), (theirs,) = found.prompt_results, expected.prompt_results
    assert np.array_equal(ours.masks, theirs.masks) and np.array_equal(ours.scores, theirs.scores)
    interactive = make_segmenter(concepts=False)
    interactive.embed(EmbedRequest(image=data, image_id="photo"))
    assert not receiver.pictures.adopt_image(("", "other"), interactive.pictures.export_image(KEY))
