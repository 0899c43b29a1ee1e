"""What the API says about a body it cannot take (`deployments.request_body`): the content
type to send, where the JSON breaks, and every field in one style, `prompts[0].points[0].x`."""

from __future__ import annotations

import pytest

from deployments.request_body import field_path, is_json
from tests.unit.http_client import B64

IMAGE = {"type": "base64", "value": B64}


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("prompts", "prompts", 0, "points", 0, "positive"), "prompts[0].points[0].positive"),
        (("prompts", 0, "points", 1, "x"), "prompts[0].points[1].x"),
        (("prompts", 0, "box_labels", 2, "bool"), "prompts[0].box_labels[2]"),
        (
            ("prompts", 1, "boxes", 0, "function-after[_one_complete_form(), ExemplarBox]"),
            "prompts[1].boxes[0]",
        ),
        (("image", "value"), "image.value"),
        ((), "body"),
    ],
)
def test_field_paths_in_one_style(loc, path):
    assert field_path(loc) == path


@pytest.mark.parametrize(
    ("content_type", "json"),
    [
        (None, True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/vnd.api+json", True),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("text/plain", False),
    ],
)
def test_what_counts_as_json(content_type, json):
    assert is_json(content_type) is json


class TestOverHttp:
    def test_curl_d_without_a_json_type_is_415_saying_what_to_send(self, api):
        response = api.post("/sam3/visual_segment", data={"image_id": "a"})  # curl -d
        assert response.status_code == 415
        body = response.json()
        assert body["code"] == "unsupported_media_type"
        assert "Content-Type: application/json" in body["message"]
        assert "not application/x-www-form-urlencoded" in body["message"]

    def test_curl_f_multipart_is_415_too(self, api):
        response = api.post("/sam3/embed_image", files={"image": b"\x89PNG"})  # curl -F
        assert response.status_code == 415 and "-F sends multipart" in response.json()["message"]

    def test_json_without_a_content_type_is_parsed(self, api):
        response = api.post(
            "/sam3/embed_image", content=f'{{"image": {{"type": "base64", "value": "{B64}"}}}}'
        )
        assert response.status_code == 200, response.text

    def test_malformed_json_says_where(self, api):
        raw = b'{"image_id": "a",\n  "prompts": [}'
        response = api.post(
            "/sam3/visual_segment", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["message"] == (
            "the body is not valid JSON: Expecting value at line 2, column 15 (character 32)"
        )

    def test_an_empty_body_says_so(self, api):
        response = api.post(
            "/sam3/visual_segment", content=b"", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422 and "no body" in response.json()["message"]

    @pytest.mark.parametrize(
        ("prompts", "message"),
        [
            # Each prompt form names the field the same way.
            (
                {"prompts": [{"points": [{"x": 1, "y": 2}]}]},
                "prompts[0].points[0].positive: required",
            ),
            ([{"points": [{"x": 1, "y": 2}]}], "prompts[0].points[0].positive: required"),
            ({"points": [{"x": 1, "y": 2}]}, "prompts[0].points[0].positive: required"),
            (
                [{"points": [{"x": 1, "y": 2, "positive": "yes"}]}],
                "prompts[0].points[0].positive: Input should be a valid boolean (true or false)",
            ),
            (
                [{"point": [{"x": 1, "y": 2, "positive": True}]}],
                "prompts[0]: unknown field 'point'; a prompt takes box, points",
            ),
        ],
    )
    def test_visual_segment_mistakes_are_422_naming_the_field(self, api, prompts, message):
        response = api.post("/sam3/visual_segment", json={"image": IMAGE, "prompts": prompts})
        assert response.status_code == 422
        assert response.json() == {"message": message, "code": "invalid_request"}

    @pytest.mark.parametrize(
        ("prompt", "message"),
        [
            ({"txt": "cat"}, "prompts[0]: unknown field 'txt'; a concept prompt takes type, text"),
            (
                {"boxes": [{"x": 1, "y": 1, "w": 3, "height": 3}], "box_labels": [1]},
                "prompts[0].boxes[0]: unknown field 'w'; an exemplar box takes x, y, width",
            ),
            (
                {"boxes": [{"x": 1, "y": 1, "width": 3, "height": 3}], "box_labels": ["yes"]},
                "prompts[0].box_labels[0]: Input should be a valid boolean",
            ),
        ],
    )
    def test_concept_mistakes_are_422_naming_the_field(self, api, prompt, message):
        response = api.post("/sam3/concept_segment", json={"image": IMAGE, "prompts": [prompt]})
        assert response.status_code == 422 and message in response.json()["message"]
