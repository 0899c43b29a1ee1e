"""`/sam3/concept_segment` over HTTP, the tiny engine in-process behind it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from sam3_core.calls import ConceptRequest
from sam3_core.concept_prompts import ConceptPrompt
from tests.unit.http_client import B64, CLICK, PNG, make_client

CONCEPTS = [
    {"type": "text", "text": "cat"},
    {"type": "visual", "boxes": [{"x": 10, "y": 20, "width": 40, "height": 30}], "box_labels": [1]},
]


class TestConceptSegment:
    def test_embed_then_concepts_by_id_then_click(self, api, engine):
        api.post(
            "/sam3/embed_image", json={"image": {"type": "base64", "value": B64}, "image_id": "p"}
        )
        response = api.post(
            "/sam3/concept_segment",
            json={"image_id": "p", "prompts": CONCEPTS, "output_prob_thresh": 0.0},
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-sam3-embedding-cache"] == "hit"
        assert response.headers["x-sam3-text-cache"] == "miss"
        body = response.json()
        assert body["time"] >= 0
        first, second = body["prompt_results"]
        assert first["echo"] == {"prompt_index": 0, "type": "text", "text": "cat", "num_boxes": 0}
        assert second["echo"] == {
            "prompt_index": 1,
            "type": "visual",
            "text": None,
            "num_boxes": 1,
        }
        assert [first["prompt_index"], second["prompt_index"]] == [0, 1]
        assert len(first["predictions"]) == engine.settings.max_concept_instances
        prediction = first["predictions"][0]
        assert prediction["format"] == "polygon" and 0 < prediction["confidence"] <= 1
        assert all(len(point) == 2 for polygon in prediction["masks"] for point in polygon)
        click = api.post("/sam3/visual_segment", json={"image_id": "p", "prompts": CLICK})
        assert click.headers["x-sam3-embedding-cache"] == "hit"
        again = api.post("/sam3/concept_segment", json={"image_id": "p", "prompts": CONCEPTS})
        assert again.headers["x-sam3-text-cache"] == "hit"
        assert engine.stats().embedding_cache_misses == 1

    def test_rle_masks_are_the_engines(self, api, engine):
        body = {
            "image": {"type": "base64", "value": B64},
            "prompts": CONCEPTS[:1],
            "format": "rle",
            "output_prob_thresh": 0.0,
        }
        response = api.post("/sam3/concept_segment", json=body)
        assert response.status_code == 200
        assert response.headers["x-sam3-embedding-cache"] == "miss"
        predictions = response.json()["prompt_results"][0]["predictions"]
        (found,) = engine.concept_segment(
            ConceptRequest(image=PNG, prompts=(ConceptPrompt(text="cat"),), output_prob_thresh=0.0)
        ).prompt_results
        assert len(predictions) == len(found)
        for prediction, mask, score in zip(predictions, found.masks, found.scores, strict=True):
            assert prediction["format"] == "rle" and prediction["masks"]["size"] == [90, 120]
            decoded = coco_mask.decode(prediction["masks"]).astype(bool)
            assert np.array_equal(decoded, mask)
            assert prediction["confidence"] == pytest.approx(float(score))

    def test_binary_is_every_instance_in_one_npz(self, api, engine):
        prompts = (ConceptPrompt(text="cat"), ConceptPrompt(text="dog"))
        body = {
            "image": {"type": "base64", "value": B64},
            "prompts": [{"text": "cat"}, {"text": "dog"}],
            "format": "binary",
            "output_prob_thresh": 0.3,
        }
        response = api.post("/sam3/concept_segment", json=body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        archive = np.load(io.BytesIO(response.content))
        found = engine.concept_segment(
            ConceptRequest(image=PNG, prompts=prompts, output_prob_thresh=0.3)
        ).prompt_results
        assert sum(map(len, found)) > 0
        assert archive["masks"].dtype == bool and archive["masks"].shape[1:] == (90, 120)
        assert np.array_equal(archive["masks"], np.concatenate([f.masks for f in found]))
        assert np.array_equal(archive["scores"], np.concatenate([f.scores for f in found]))
        assert np.array_equal(archive["boxes"], np.concatenate([f.boxes for f in found]))
        counts = [len(f) for f in found]
        assert np.array_equal(archive["prompt_index"], np.repeat([0, 1], counts))

    def test_a_box_in_both_forms_is_read_as_roboflow_reads_it(self, api):
        """Roboflow's `Union[Box, BoxXYXY]` validates {x, y, width, height} first."""
        xywh = {"x": 10, "y": 20, "width": 40, "height": 30}
        both = {**xywh, "x0": 70, "y0": 5, "x1": 110, "y1": 85}

        def masks(box: dict) -> list:
            body = {
                "image": {"type": "base64", "value": B64},
                "prompts": [{"boxes": [box], "box_labels": [1]}],
                "format": "rle",
                "output_prob_thresh": 0.0,
            }
            response = api.post("/sam3/concept_segment", json=body)
            assert response.status_code == 200, response.text
            return response.json()["prompt_results"][0]["predictions"]

        xyxy = {k: both[k] for k in ("x0", "y0", "x1", "y1")}
        assert masks(both) == masks(xywh) != masks(xyxy)

    def test_legacy_single_prompt_and_roboflow_keys(self, api):
        body = {
            "image": {"type": "base64", "value": B64},
            "text": "cat",
            "model_id": "sam3/sam3_final",
            "api_key": "x",
            "output_prob_thresh": 1.0,
        }
        response = api.post("/sam3/concept_segment", json=body)
        assert response.status_code == 200, response.text
        (result,) = response.json()["prompt_results"]
        assert result["echo"]["text"] == "cat" and result["predictions"] == []

    def test_unknown_image_id_is_404(self, api):
        response = api.post("/sam3/concept_segment", json={"image_id": "nope", "text": "cat"})
        assert response.status_code == 404
        assert response.json()["code"] == "image_not_cached"

    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [
            ({"prompts": []}, 400, "at least one prompt"),
            ({}, 400, "at least one prompt"),
            ({"prompts": [{"type": "text"}]}, 400, "needs a text or boxes"),
            ({"prompts": [{"text": "a" * 257}]}, 400, "limit is 256"),
            ({"prompts": [{"text": "a"}] * 17}, 400, "limit is 16"),
            ({"prompts": [{"text": "a"}], "output_prob_thresh": 2}, 400, "between 0 and 1"),
            ({"prompts": [{"text": "a"}], "nms_iou_threshold": -1}, 400, "between 0 and 1"),
            (
                {
                    "prompts": [
                        {"boxes": [{"x": 1, "y": 1, "width": 5, "height": 5}], "box_labels": []}
                    ]
                },
                400,
                "0 labels for 1 boxes",
            ),
            ({"prompts": [{"boxes": [{"x": 1, "y": 1}]}]}, 422, "x0, y0, x1, y1"),
            ({"prompts": [{"text": 5}]}, 422, "string"),
            ({"prompts": [{"text": "a"}], "format": "mask"}, 422, "format"),
        ],
    )
    def test_bad_input_is_4xx_before_the_image_is_read(self, api, body, status, message):
        body = {"image": {"type": "base64", "value": "not base64 at all!"}, **body}
        response = api.post("/sam3/concept_segment", json=body)
        assert response.status_code == status, response.text
        assert set(response.json()) == {"message", "code"}
        assert message in response.json()["message"]

    def test_an_exemplar_box_off_the_image_is_400(self, api):
        api.post(
            "/sam3/embed_image", json={"image": {"type": "base64", "value": B64}, "image_id": "p"}
        )
        off = {"x": 200, "y": 10, "width": 20, "height": 20}  # the image is 120x90
        body = {"image_id": "p", "prompts": [{"boxes": [off], "box_labels": [1]}]}
        response = api.post("/sam3/concept_segment", json=body)
        assert response.status_code == 400
        message = response.json()["message"]
        assert message.startswith("prompts[0].boxes[0]: ") and "120x90 pixels" in message

    def test_interactive_only_deployment_says_so(self, make_segmenter):
        api, _ = make_client(make_segmenter(concepts=False))
        body = {"image": {"type": "base64", "value": B64}, "text": "cat"}
        response = api.post("/sam3/concept_segment", json=body)
        assert response.status_code == 400
        assert response.json()["code"] == "concepts_disabled"
        assert "SAM3_CONCEPTS" in response.json()["message"]

    def test_the_route_is_in_the_openapi_document(self, api):
        schema = api.get("/openapi.json").json()
        assert "/sam3/concept_segment" in schema["paths"]
