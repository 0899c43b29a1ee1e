"""Concept segmentation (`Segmenter.concept_segment`) equals sam3 itself — `Sam3Processor`'s
`set_image` + `set_text_prompt` / `add_geometric_prompt` — on the same random weights (tiny
architecture), and shares one trunk pass per image with clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3_core import Segmenter
from sam3_core.architecture import TINY
from sam3_core.calls import ConceptRequest, EmbedRequest, SegmentRequest
from sam3_core.concept_model import Grounding, cross_prompt_nms, instances
from sam3_core.concept_prompts import ConceptPrompt, legacy_prompt
from sam3_core.errors import (
    ConceptsDisabledError,
    ImageNotCachedError,
    InvalidPromptError,
    MaskBudgetError,
)
from sam3_core.model import InteractiveSam3
from sam3_core.prompts import PromptSet
from sam3_core.sam3_compat import clip_vocabulary
from sam3_core.weights import load_checkpoint
from tests.conftest import encode_image, random_pixels, tiny_settings
from tests.sam3_reference import ReferenceSam3Image

H, W = 150, 210
THRESHOLD = 0.1
BOX = [30.0, 40.0, 110.0, 120.0]  # XYXY pixels
NEG_BOX = [120.0, 20.0, 190.0, 90.0]


@pytest.fixture(scope="module")
def reference() -> ReferenceSam3Image:
    return ReferenceSam3Image(TINY, seed=5)


@pytest.fixture(scope="module")
def model(reference) -> InteractiveSam3:
    model = InteractiveSam3(TINY, max_hole_area=0, concepts_bpe_path=clip_vocabulary())
    load_checkpoint(model, reference.checkpoint())
    return model.eval()


@pytest.fixture
def engine(model) -> Segmenter:
    return Segmenter(model, tiny_settings(embedding_cache_bytes=2**26))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return random_pixels(21, H, W)


def xywh(box: list[float]) -> dict[str, float]:
    """A top-left XYWH exemplar box, as Roboflow's concept route takes it."""
    return {"x": box[0], "y": box[1], "width": box[2] - box[0], "height": box[3] - box[1]}


def concept(engine: Segmenter, image: np.ndarray, *prompts: dict, **options):
    request = ConceptRequest(
        image=encode_image(image),
        prompts=tuple(ConceptPrompt.model_validate(p) for p in prompts),
        output_prob_thresh=options.pop("threshold", THRESHOLD),
        **options,
    )
    return engine.concept_segment(request)


def sam3(reference: ReferenceSam3Image, image: np.ndarray, **prompt) -> tuple[dict, float]:
    """sam3's result at a threshold that keeps about half its queries (random weights score
    all queries alike, somewhere in (0, 1)), and that threshold."""
    everything = reference.concept(image, threshold=0.0, **prompt)
    threshold = float(np.median(everything["scores"].numpy()))
    return reference.concept(image, threshold=threshold, **prompt), threshold


def assert_same(ours, theirs, *, exact: bool = True) -> None:
    masks = theirs["masks"][:, 0].numpy()
    scores, boxes = theirs["scores"].numpy(), theirs["boxes"].float().numpy()
    assert len(ours) == len(scores) > 0
    if exact:
        assert np.array_equal(ours.scores, scores)
        assert np.array_equal(ours.boxes, boxes)
        assert np.array_equal(ours.masks, masks)
    else:  # batched with other queries: the same maths in other reduction orders
        np.testing.assert_allclose(ours.scores, scores, atol=1e-5)
        np.testing.assert_allclose(ours.boxes, boxes, atol=1e-3)
        assert (ours.masks != masks).mean() < 1e-3


class TestParityWithSam3:
    def test_text(self, engine, reference, image):
        theirs, threshold = sam3(reference, image, text="a red car")
        (ours,) = concept(
            engine, image, {"type": "text", "text": "a red car"}, threshold=threshold
        ).prompt_results
        assert_same(ours, theirs)
        assert ours.masks.shape[1:] == (H, W)

    def test_positive_box_exemplar(self, engine, reference, image):
        theirs, threshold = sam3(reference, image, boxes=[(BOX, True)])
        (ours,) = concept(
            engine, image, {"boxes": [xywh(BOX)], "box_labels": [1]}, threshold=threshold
        ).prompt_results
        assert_same(ours, theirs)

    def test_positive_and_negative_exemplars_in_both_box_forms(self, engine, reference, image):
        theirs, threshold = sam3(reference, image, boxes=[(BOX, True), (NEG_BOX, False)])
        x0, y0, x1, y1 = NEG_BOX
        prompt = {
            "type": "visual",
            "boxes": [xywh(BOX), {"x0": x0, "y0": y0, "x1": x1, "y1": y1}],
            "box_labels": [True, 0],
        }
        (ours,) = concept(engine, image, prompt, threshold=threshold).prompt_results
        assert_same(ours, theirs)
        positive_only = reference.concept(image, boxes=[(BOX, True)], threshold=0.0)
        everything = reference.concept(image, boxes=[(BOX, True), (NEG_BOX, False)], threshold=0)
        assert not torch.equal(everything["scores"], positive_only["scores"])  # labels matter

    def test_text_and_boxes(self, engine, reference, image):
        theirs, threshold = sam3(reference, image, text="dog", boxes=[(BOX, True)])
        (ours,) = concept(
            engine,
            image,
            {"text": "dog", "boxes": [xywh(BOX)], "box_labels": [1]},
            threshold=threshold,
        ).prompt_results
        assert_same(ours, theirs)

    def test_several_prompts_run_as_queries_of_one_pass(self, engine, reference, image, model):
        prompts = [
            ({"text": "car"}, {"text": "car"}),
            ({"boxes": [xywh(BOX)]}, {"boxes": [(BOX, True)]}),
            ({"text": "tree"}, {"text": "tree"}),
            (
                {"text": "dog", "boxes": [xywh(BOX), xywh(NEG_BOX)], "box_labels": [1, 0]},
                {"text": "dog", "boxes": [(BOX, True), (NEG_BOX, False)]},
            ),
        ]
        expected = [sam3(reference, image, **theirs) for _, theirs in prompts]
        calls = []
        ground = model.concepts.ground
        engine.model.concepts.ground = lambda *a: calls.append(1) or ground(*a)
        try:
            result = concept(
                engine,
                image,
                *(
                    {**ours, "output_prob_thresh": threshold}
                    for (ours, _), (_, threshold) in zip(prompts, expected, strict=True)
                ),
            )
        finally:
            del engine.model.concepts.ground
        assert len(calls) == 1
        for found, (theirs, _) in zip(result.prompt_results, expected, strict=True):
            assert_same(found, theirs, exact=False)


class TestOneTrunkPassPerImage:
    def test_embed_then_concepts_then_clicks_by_id(self, engine, image, model):
        passes = []
        trunk = model.image_encoder.trunk.forward
        model.image_encoder.trunk.forward = lambda *a: passes.append(1) or trunk(*a)
        try:
            image_id = engine.embed(EmbedRequest(image=encode_image(image))).image_id
            first = engine.concept_segment(
                ConceptRequest(image_id=image_id, prompts=(ConceptPrompt(text="cat"),))
            )
            click = engine.segment(
                SegmentRequest(
                    image_id=image_id,
                    prompts=PromptSet.model_validate(
                        {"points": [{"x": 9, "y": 9, "positive": True}]}
                    ),
                )
            )
            boxes = engine.concept_segment(
                ConceptRequest(image_id=image_id, prompts=(ConceptPrompt(boxes=[xywh(BOX)]),))
            )
        finally:
            del model.image_encoder.trunk.forward
        assert len(passes) == 1
        assert (first.embedding_cache, click.embedding_cache, boxes.embedding_cache) == ("hit",) * 3
        stats = engine.stats()
        assert (stats.embedding_cache_misses, stats.embedding_cache_hits) == (1, 3)

    def test_concepts_first_then_clicks(self, engine, image):
        data = encode_image(image)
        assert concept(engine, image, {"text": "cat"}).embedding_cache == "miss"
        click = engine.segment(SegmentRequest(image=data))
        assert click.embedding_cache == "hit"

    def test_unknown_image_id(self, engine):
        with pytest.raises(ImageNotCachedError):
            engine.concept_segment(
                ConceptRequest(image_id="never-sent", prompts=(ConceptPrompt(text="cat"),))
            )


class TestTextCache:
    def test_a_known_text_skips_the_text_encoder(self, engine, image, model):
        encoded = []
        encode = model.concepts.encode_texts
        model.concepts.encode_texts = lambda texts: encoded.append(texts) or encode(texts)
        try:
            first = concept(engine, image, {"text": "car"}, {"text": "bus"}, {"text": "car"})
            again = concept(engine, image, {"text": "bus"}, {"boxes": [xywh(BOX)]})
            last = concept(engine, image, {"text": "car"}, {"boxes": [xywh(NEG_BOX)]})
        finally:
            del model.concepts.encode_texts
        assert encoded == [["car", "bus"], ["visual"]]
        assert (first.text_cache, again.text_cache, last.text_cache) == ("miss", "miss", "hit")
        assert len(engine.texts) == 3
        # A cached text gives what encoding it again would (up to the batch's float noise).
        np.testing.assert_allclose(
            first.prompt_results[0].scores, last.prompt_results[0].scores, atol=1e-5
        )

    def test_the_cache_is_bounded_by_bytes(self, model, image):
        engine = Segmenter(model, tiny_settings(text_cache_bytes=3 * 64 * 32 * 4))
        concept(engine, image, *({"text": f"class {i}"} for i in range(6)))
        assert len(engine.texts) == 2 and engine.texts.nbytes <= 3 * 64 * 32 * 4
        # Keyed by (tenant, text); without API keys there is one tenant, "".
        assert ("", "class 5") in engine.texts and ("", "class 0") not in engine.texts

    def test_one_tenant_learns_nothing_of_anothers_texts(self, model, image):
        engine = Segmenter(model, tiny_settings())
        data = encode_image(image)

        def text_cache(tenant: str) -> str:
            request = ConceptRequest(
                image=data, tenant=tenant, prompts=(ConceptPrompt(text="secret project"),)
            )
            return engine.concept_segment(request).text_cache

        assert (text_cache("alice"), text_cache("bob"), text_cache("bob")) == (
            "miss",
            "miss",
            "hit",
        )


class TestThresholdsAndNms:
    """`instances` and `cross_prompt_nms` on detector outputs written by hand."""

    @staticmethod
    def grounding() -> Grounding:
        # Two prompts x four queries on a 4x4 low-res grid, image 8x8 (masks scale 2x).
        logits = torch.full((2, 4, 4, 4), -10.0)
        logits[0, 0, :2, :2] = 10.0  # prompt 0: top-left quarter
        logits[0, 1, :2, :3] = 10.0  # prompt 0: top-left, wider (IoU with query 0: 4/6)
        logits[0, 2, 2:, 2:] = 10.0  # prompt 0: bottom-right quarter
        logits[1, 0, :2, :2] = 10.0  # prompt 1: the same quarter as prompt 0's query 0
        logits[1, 3, 2:, :2] = 10.0  # prompt 1: bottom-left quarter
        scores = torch.tensor([[0.9, 0.6, 0.3, 0.05], [0.8, 0.1, 0.2, 0.7]])
        boxes = torch.tensor([0.25, 0.25, 0.5, 0.5]).expand(2, 4, 4).clone()
        return Grounding(scores=scores, boxes=boxes, mask_logits=logits)

    def test_masks_past_the_budget_are_refused_before_upsampling(self):
        grounding = self.grounding()
        kept = sum(int((grounding.scores[row] >= 0.0).sum()) for row in range(2))
        with pytest.raises(MaskBudgetError, match="SAM3_MAX_MASK_PIXELS"):
            instances(
                grounding, (8, 8), [0.0, 0.0], max_instances=10, max_mask_pixels=64 * kept - 1
            )
        found = instances(
            grounding, (8, 8), [0.0, 0.0], max_instances=10, max_mask_pixels=64 * kept
        )
        assert sum(len(group) for group in found) == kept

    def test_thresholds_per_prompt_and_bound_on_instances(self):
        found = instances(
            self.grounding(),
            (8, 8),
            thresholds=[0.3, 0.75],
            max_instances=10,
            max_mask_pixels=10**6,
        )
        assert found[0].scores.tolist() == pytest.approx([0.9, 0.6, 0.3])  # at least 0.3
        assert found[1].scores.tolist() == pytest.approx([0.8])
        top = instances(
            self.grounding(), (8, 8), thresholds=[0.0, 0.0], max_instances=2, max_mask_pixels=10**6
        )
        assert top[0].scores.tolist() == pytest.approx([0.9, 0.6])
        assert top[1].scores.tolist() == pytest.approx([0.8, 0.7])  # query order kept
        expected = np.zeros((8, 8), dtype=bool)
        expected[:4, :4] = True
        assert np.array_equal(found[0].masks[0], expected)
        assert found[0].boxes[0].tolist() == pytest.approx([0.0, 0.0, 4.0, 4.0])

    def test_nms_across_prompts_keeps_the_higher_score(self):
        found = instances(
            self.grounding(), (8, 8), thresholds=[0.0, 0.5], max_instances=10, max_mask_pixels=10**6
        )
        # Masks: p0q0 (16 px), p0q1 (24 px, IoU 16/24 with p0q0), p0q2, p0q3 (empty), p1q0
        # (= p0q0, IoU 1), p1q3. At 0.7: p1q0 goes (p0q0 scores higher), p0q1 stays.
        kept = cross_prompt_nms(found, 0.7)
        assert kept[0].scores.tolist() == pytest.approx([0.9, 0.6, 0.3, 0.05])
        assert kept[1].scores.tolist() == pytest.approx([0.7])
        # At 0.5, p0q1 (IoU 0.67 with p0q0) goes too.
        kept = cross_prompt_nms(found, 0.5)
        assert kept[0].scores.tolist() == pytest.approx([0.9, 0.3, 0.05])
        assert kept[1].scores.tolist() == pytest.approx([0.7])

    def test_request_threshold_and_prompt_override(self, engine, image):
        (everything,) = concept(engine, image, {"text": "car"}, threshold=0.0).prompt_results
        assert len(everything) == 100  # every query scores above 0; capped at the bound
        median = float(np.median(everything.scores))
        result = concept(
            engine,
            image,
            {"text": "car"},
            {"text": "car", "output_prob_thresh": 0},
            threshold=median,
        )
        strict, loose = result.prompt_results
        assert len(loose) == 100
        assert 0 < len(strict) < len(loose) and (strict.scores >= median).all()

    def test_nms_through_the_engine_removes_overlaps(self, engine, image):
        plain = concept(engine, image, {"text": "car"}, {"text": "car"}, threshold=0.0)
        nms = concept(
            engine, image, {"text": "car"}, {"text": "car"}, threshold=0.0, nms_iou_threshold=0.5
        )
        # Identical queries: of each twin pair at most one stays, and no two kept masks of
        # different prompts overlap by more than the threshold.
        kept = [len(found) for found in nms.prompt_results]
        assert 0 < sum(kept) <= len(plain.prompt_results[0])
        for a in nms.prompt_results[0].masks:
            for b in nms.prompt_results[1].masks:
                assert (a & b).sum() / max((a | b).sum(), 1) <= 0.5


class TestLimitsAndBadInput:
    @pytest.mark.parametrize(
        ("prompts", "options", "message"),
        [
            ([], {}, "at least one prompt"),
            ([{}], {}, r"prompts\[0\]: a prompt needs a text or boxes"),
            ([{"text": "  "}], {}, r"prompts\[0\].text: empty"),
            ([{"text": "x" * 300}], {}, "300 characters, the limit is 256"),
            ([{"text": "a"}] * 17, {}, "17 prompts, the limit is 16"),
            ([{"boxes": [xywh(BOX)] * 65}], {}, "65 boxes in the request, the limit is 64"),
            ([{"boxes": [xywh(BOX)], "box_labels": [1, 0]}], {}, "2 labels for 1 boxes"),
            ([{"boxes": [xywh(BOX)], "box_labels": [2]}], {}, "must be 0 or 1"),
            ([{"boxes": [{"x": 5, "y": 5, "width": 0, "height": 3}]}], {}, "must be > 0"),
            ([{"boxes": [{"x0": 5, "y0": 5, "x1": 2, "y1": 9}]}], {}, "must be > 0"),
            ([{"boxes": [{"x": float("nan"), "y": 5, "width": 1, "height": 3}]}], {}, "finite"),
            ([{"text": "a", "output_prob_thresh": 1.5}], {}, r"output_prob_thresh: must be"),
            ([{"text": "a"}], {"output_prob_thresh": -0.1}, "output_prob_thresh: must be"),
            ([{"text": "a"}], {"nms_iou_threshold": float("nan")}, "nms_iou_threshold: must be"),
        ],
    )
    def test_refused_before_the_model(self, engine, prompts, options, message):
        request = ConceptRequest(
            image_id="whatever",
            prompts=tuple(ConceptPrompt.model_validate(p) for p in prompts),
            **options,
        )
        with pytest.raises(InvalidPromptError, match=message):
            engine.concept_segment(request)

    def test_interactive_only_deployment_refuses_concepts(self, make_segmenter, image):
        engine = make_segmenter(concepts=False)
        assert engine.model.concepts is None
        with pytest.raises(ConceptsDisabledError, match="SAM3_CONCEPTS"):
            concept(engine, image, {"text": "cat"})
        assert engine.stats().embedding_cache_misses == 0  # refused before embedding

    def test_legacy_single_prompt(self):
        body = legacy_prompt({"text": "cat", "boxes": [xywh(BOX)], "box_labels": [1]})
        assert body["prompts"] == [
            {"type": "visual", "text": "cat", "boxes": [xywh(BOX)], "box_labels": [1]}
        ]
        assert legacy_prompt({"prompts": [{"text": "a"}], "text": "b"})["prompts"] == [
            {"text": "a"}
        ]
