"""The HTTP API without Ray: FastAPI's test client, the tiny engine in-process behind it."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from bench.samples import flat_image, image_body
from sam3_core import Segmenter, SegmentRequest
from sam3_core.images import content_id
from sam3_core.protocol.masks import masks_to_rle
from tests.conftest import png_header
from tests.unit.http_client import B64, CLICK, PNG, make_client


class TestEmbedImage:
    def test_content_hash_id_and_cache_headers(self, api):
        first = api.post("/sam3/embed_image", json={"image": {"type": "base64", "value": B64}})
        assert first.status_code == 200
        assert first.json()["image_id"] == content_id(PNG)
        assert first.json()["time"] >= 0
        assert first.headers["x-sam3-embedding-cache"] == "miss"
        assert first.headers["x-sam3-replica"] == "local"
        assert first.headers["x-sam3-image-id"] == content_id(PNG)
        again = api.post(
            "/sam3/embed_image",
            json={"image": {"type": "base64", "value": "data:image/png;base64," + B64}},
        )
        assert again.headers["x-sam3-embedding-cache"] == "hit"

    def test_roboflow_keys_are_ignored(self, api):
        body = {
            "image": {"type": "base64", "value": B64},
            "image_id": "img-1",
            "api_key": "x",
            "id": "abc",
            "model_id": "sam3/sam3_final",
            "sam2_version_id": "hiera_large",
        }
        response = api.post("/sam3/embed_image", json=body)
        assert response.status_code == 200 and response.json()["image_id"] == "img-1"


class TestVisualSegment:
    def test_the_three_prompt_forms(self, api):
        forms = [{"prompts": [CLICK]}, [CLICK], CLICK]
        masks = []
        for form in forms:
            body = {"image": {"type": "base64", "value": B64}, "prompts": form}
            response = api.post("/sam3/visual_segment", json=body)
            assert response.status_code == 200, response.text
            (prediction,) = response.json()["predictions"]
            assert prediction["format"] == "polygon"
            masks.append(prediction["masks"])
        assert masks[0] == masks[1] == masks[2]

    def test_one_prediction_per_prompt_and_none_for_no_prompt(self, api):
        body = {
            "image": {"type": "base64", "value": B64},
            "prompts": [CLICK, {"box": {"x": 60, "y": 45, "width": 40, "height": 30}}, {}],
            "format": "rle",
        }
        predictions = api.post("/sam3/visual_segment", json=body).json()["predictions"]
        assert [p["format"] for p in predictions] == ["rle"] * 3
        assert predictions[0]["masks"]["size"] == [90, 120]
        empty = api.post("/sam3/visual_segment", json={"image": {"type": "base64", "value": B64}})
        assert len(empty.json()["predictions"]) == 1

    def test_the_id_of_an_inline_image_comes_back_in_a_header(self, api):
        """A client that sent the image inline clicks by id next, without hashing it."""
        body = {"image": {"type": "base64", "value": B64}, "prompts": CLICK}
        first = api.post("/sam3/visual_segment", json=body)
        assert first.status_code == 200 and set(first.json()) == {"predictions", "time"}
        image_id = first.headers["x-sam3-image-id"]
        assert image_id == content_id(PNG)
        by_id = api.post("/sam3/visual_segment", json={"image_id": image_id, "prompts": CLICK})
        assert by_id.headers["x-sam3-embedding-cache"] == "hit"
        assert by_id.headers["x-sam3-image-id"] == image_id
        named = api.post("/sam3/visual_segment", json={**body, "image_id": "mine"})
        assert named.headers["x-sam3-image-id"] == "mine"

    def test_id_only_after_embed(self, api):
        image_id = api.post(
            "/sam3/embed_image", json={"image": {"type": "base64", "value": B64}}
        ).json()["image_id"]
        response = api.post("/sam3/visual_segment", json={"image_id": image_id, "prompts": CLICK})
        assert response.status_code == 200
        assert response.headers["x-sam3-embedding-cache"] == "hit"
        assert "x-sam3-logits-cache" not in response.headers

    def test_request_carries_bytes_id_digest_and_options(self, engine):
        api, backend = make_client(engine)
        body = {
            "image": {"type": "base64", "value": B64},
            "prompts": CLICK,
            "multimask_output": False,
            "format": "json",
            "save_logits_to_cache": True,
            "load_logits_from_cache": True,
        }
        response = api.post("/sam3/visual_segment", json=body)
        assert response.status_code == 200
        assert response.headers["x-sam3-logits-cache"] == "miss"  # nothing saved before it
        (request,) = backend.calls
        assert request.image == PNG and request.image_id == request.image_digest == content_id(PNG)
        assert request.mask_format == "polygon" and request.multimask_output is False
        assert request.save_logits_to_cache and request.load_logits_from_cache


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            ({"image_id": "never-embedded", "prompts": CLICK}, 404, "image_not_cached"),
            ({"prompts": CLICK}, 400, "invalid_image"),
            ({"image": {"type": "base64", "value": "%%%"}}, 400, "invalid_image"),
            (
                {"image": {"type": "base64", "value": base64.b64encode(b"GIF89a").decode()}},
                400,
                "invalid_image",
            ),
            ({"image": {"type": "numpy", "value": "gASV"}}, 400, "invalid_image"),
            (
                {"image": {"type": "url", "value": "http://169.254.169.254/"}},
                400,
                "url_input_refused",
            ),
            ({"image_id": "a b", "prompts": CLICK}, 400, "invalid_image_id"),
            ({"image_id": "x" * 300}, 400, "invalid_image_id"),
            (
                {
                    "image": {"type": "base64", "value": B64},
                    "prompts": {"box": {"x": 1, "y": 1, "width": 0, "height": 3}},
                },
                400,
                "invalid_prompt",
            ),
            (
                {"image": {"type": "base64", "value": B64}, "prompts": [{}] * 65},
                400,
                "invalid_prompt",
            ),
            (
                {
                    "image": {"type": "base64", "value": B64},
                    "prompts": {"points": [{"x": 1, "y": 2}]},
                },
                422,
                "invalid_request",
            ),
            (
                {"image": {"type": "base64", "value": B64}, "format": "png"},
                422,
                "invalid_request",
            ),
            ({"image": "just a string"}, 422, "invalid_request"),
        ],
    )
    def test_status_and_code(self, api, body, status, code):
        response = api.post("/sam3/visual_segment", json=body)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code and response.json()["message"]

    def test_nan_and_infinity_are_400_naming_the_field(self, api):
        prompts = '{"points": [{"x": NaN, "y": 1, "positive": true}]}'
        raw = f'{{"image": {{"type": "base64", "value": "{B64}"}}, "prompts": {prompts}}}'
        response = api.post(
            "/sam3/visual_segment", content=raw, headers={"content-type": "application/json"}
        )
        assert (
            response.status_code == 400 and "prompts[0].points[0].x" in response.json()["message"]
        )

    def test_not_json(self, api):
        response = api.post(
            "/sam3/visual_segment",
            content=b"\x00\x01",
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422

    def test_image_and_pixel_limits_are_413(self, engine):
        api, _ = make_client(engine, max_image_bytes=1000)
        response = api.post("/sam3/embed_image", json={"image": {"type": "base64", "value": B64}})
        assert response.status_code == 413 and response.json()["code"] == "image_too_large"
        small = make_client(
            Segmenter(engine.model, engine.settings.model_copy(update={"max_image_pixels": 100}))
        )[0]
        response = small.post("/sam3/embed_image", json={"image": {"type": "base64", "value": B64}})
        assert response.status_code == 413

    def test_an_image_over_pillows_own_limit_is_413_quoting_ours(self, api):
        value = base64.b64encode(png_header(20000, 10000)).decode()
        response = api.post("/sam3/embed_image", json={"image": {"type": "base64", "value": value}})
        assert response.status_code == 413 and response.json()["code"] == "image_too_large"
        assert "the limit is 67108864 (SAM3_MAX_IMAGE_PIXELS)" in response.json()["message"]

    def test_body_limit_from_content_length_and_while_streaming(self, engine):
        api, _ = make_client(engine, max_request_bytes=2000)
        response = api.post("/sam3/embed_image", json={"image": {"type": "base64", "value": B64}})
        assert response.status_code == 413 and response.json()["code"] == "request_too_large"

        def chunks():
            for _ in range(10):
                yield b" " * 500

        streamed = api.post(
            "/sam3/embed_image", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert api.get("/healthz").status_code == 200

    def test_unavailable_owner_is_503_with_retry_after(self, engine):
        api, backend = make_client(engine)
        backend.unavailable = True
        response = api.post(
            "/sam3/visual_segment", json={"image": {"type": "base64", "value": B64}}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert response.json()["code"] == "service_unavailable"

    def test_bad_input_leaves_the_cache_serving(self, api):
        image_id = api.post(
            "/sam3/embed_image", json={"image": {"type": "base64", "value": B64}}
        ).json()["image_id"]
        for bad in (
            {"image": {"type": "base64", "value": "AAAA"}, "image_id": image_id},
            {"image_id": image_id, "prompts": [{}] * 99},
        ):
            assert api.post("/sam3/visual_segment", json=bad).status_code == 400
        response = api.post("/sam3/visual_segment", json={"image_id": image_id, "prompts": CLICK})
        assert response.status_code == 200 and response.headers["x-sam3-embedding-cache"] == "hit"

    def test_a_click_outside_the_image_is_400_by_id_and_inline(self, api):
        """The ingress does not know the image's size; its owner does, from the embedding."""
        image_id = api.post(
            "/sam3/embed_image", json={"image": {"type": "base64", "value": B64}}
        ).json()["image_id"]
        outside = [{"points": [{"x": 5000, "y": -20, "positive": True}]}]
        for body in (
            {"image_id": image_id, "prompts": outside},
            {"image": {"type": "base64", "value": B64}, "prompts": outside},
        ):
            response = api.post("/sam3/visual_segment", json=body)
            assert response.status_code == 400
            assert response.json() == {
                "message": "prompts[0].points[0].x: 5000 is outside the image (120x90 pixels: "
                "x from 0 to 120)",
                "code": "invalid_prompt",
            }
        box_past_an_edge = [{"box": {"x": 110, "y": 45, "width": 40, "height": 30}}]
        response = api.post(
            "/sam3/visual_segment", json={"image_id": image_id, "prompts": box_past_an_edge}
        )
        assert response.status_code == 200, response.text

    def test_what_roboflow_clients_send_stays_accepted(self, api):
        """The inference-sdk 1.8.3's `sam3_visual_segment` body (its prompts wrapped in
        {"prompts": [...]}, api_key, format, multimask_output) and Roboflow's own integration
        test's body, which has no prompts at all: one prediction, the most prominent mask."""
        image = {"type": "base64", "value": B64}
        sdk = {
            "api_key": "unused",
            "image": image,
            "multimask_output": True,
            "format": "json",
            "prompts": {
                "prompts": [
                    {"points": [{"x": 20, "y": 30, "positive": True}]},
                    {"box": {"x": 70, "y": 45, "width": 40, "height": 30}},
                ]
            },
        }
        response = api.post("/sam3/visual_segment", json=sdk)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        roboflow_test = api.post("/sam3/visual_segment", json={"image": image})
        assert len(roboflow_test.json()["predictions"]) == 1


def test_openapi_documents_the_routes(api):
    spec = api.get("/openapi.json").json()
    assert {"/sam3/embed_image", "/sam3/visual_segment", "/healthz"} <= set(spec["paths"])
    responses = spec["paths"]["/sam3/visual_segment"]["post"]["responses"]
    assert {"200", "400", "404", "413", "415", "422", "503"} <= set(responses)
    assert api.get("/docs").status_code == 200


def test_masks_match_the_engine(api, engine):
    body = {"image": {"type": "base64", "value": B64}, "prompts": CLICK, "format": "rle"}
    (prediction,) = api.post("/sam3/visual_segment", json=body).json()["predictions"]
    direct = engine.segment(
        SegmentRequest(image=PNG, prompts=SegmentRequest().prompts.model_validate(CLICK))
    ).decoded
    (expected,) = masks_to_rle(direct.masks)
    assert prediction["masks"]["counts"] == expected["counts"]
    assert np.isclose(prediction["confidence"], direct.scores[0])


def test_mask_budget_is_413_before_the_image_is_decoded(api):
    """64 boxes on a 64 MP picture ask for 4 G mask pixels: refused from the header."""
    huge = image_body(flat_image(8000, 8000))
    boxes = [{"box": {"x": 100, "y": 100, "width": 50, "height": 50}}] * 64
    response = api.post("/sam3/visual_segment", json={"image": huge, "prompts": boxes})
    assert response.status_code == 413 and response.json()["code"] == "mask_budget_exceeded"
    assert "SAM3_MAX_MASK_PIXELS" in response.json()["message"]


def test_binary_format_is_roboflows_npz(api):
    body = {
        "image": {"type": "base64", "value": B64},
        "prompts": [CLICK, CLICK],
        "format": "binary",
    }
    response = api.post("/sam3/visual_segment", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    arrays = np.load(io.BytesIO(response.content))
    assert arrays["masks"].shape == (2, 90, 120) and arrays["masks"].dtype == bool
    assert arrays["low_res_masks"].shape == (2, 64, 64)
    rle = api.post("/sam3/visual_segment", json={**body, "format": "rle"}).json()["predictions"]
    decoded = coco_mask.decode({"size": [90, 120], "counts": rle[0]["masks"]["counts"]})
    assert np.array_equal(arrays["masks"][0], decoded.astype(bool))


def test_server_timing_gives_the_stages_of_each_request(api):
    body = {"image": {"type": "base64", "value": B64}, "prompts": CLICK}
    for path in ("/sam3/embed_image", "/sam3/visual_segment"):
        response = api.post(path, json=body)
        stages = {
            name: float(duration.removeprefix("dur="))
            for name, duration in (
                item.strip().split(";") for item in response.headers["server-timing"].split(",")
            )
        }
        assert {"parse", "owner", "encode", "total"} <= set(stages), stages
        assert all(value >= 0 for value in stages.values())
        assert stages["total"] >= stages["parse"] + stages["owner"] - 0.01
        assert abs(stages["total"] / 1000 - response.json()["time"]) < 0.005
    assert "embed" in stages or "decode" in stages


def test_the_model_route_says_random_weights_and_needs_the_key(engine):
    open_api, _ = make_client(engine)
    served = open_api.get("/sam3/model")
    assert served.status_code == 200, served.text
    body = served.json()
    assert "masks are noise" in body.pop("description")
    assert body == {
        "weights": "random",
        "name": "random:tiny",
        "architecture": "tiny",
        "concepts": "untrained",
        "held_out": {},
    }
    keyed, _ = make_client(engine, api_keys="k-one")
    assert keyed.get("/sam3/model").status_code == 401
    assert keyed.get("/sam3/model", headers={"Authorization": "Bearer k-one"}).status_code == 200
