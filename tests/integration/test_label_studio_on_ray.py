"""Label Studio's ML-backend routes on the session's Ray cluster (`test_label_studio.py` runs
them against a real Label Studio, in-process)."""

from __future__ import annotations

import base64

import pytest

from bench import label_studio
from tests.integration.serving import deploy
from tests.integration.test_label_studio import CIRCLE_CENTRE, WIDTH, keypoint, shapes

pytestmark = pytest.mark.ray


def test_the_adapter_on_the_ray_cluster(service):
    """The same routes through Ray's proxy and the segmenter replicas: Label Studio's clicks
    and its pre-annotation reach the image's one owner, which embeds it once (a `data:` URI
    task, so no Label Studio is needed: the ingress sends its digest first)."""
    deploy(service, 2)
    png, _ = shapes()
    image = "data:image/png;base64," + base64.b64encode(png).decode()
    task = {"id": 7, "data": {"image": image}}

    def predict(regions: list[dict] | None) -> tuple[dict, dict]:
        body = {
            "tasks": [task],
            "label_config": label_studio.BRUSH_CONFIG,
            "params": {"context": {"result": regions} if regions else None},
        }
        response = service.post("/label-studio/predict", body)
        assert response.status_code == 200, response.text
        return response.json(), response.headers

    _, first = predict([keypoint(40, 36)])
    second_body, second = predict([keypoint(40, 36), keypoint(*CIRCLE_CENTRE, positive=False)])
    _, concepts = predict(None)
    assert first["x-sam3-embedding-cache"] == "miss"
    assert second["x-sam3-embedding-cache"] == concepts["x-sam3-embedding-cache"] == "hit"
    assert second["x-sam3-logits-cache"] == "hit"
    assert first["x-sam3-replica"] == second["x-sam3-replica"] == concepts["x-sam3-replica"]
    (result,) = second_body["results"][0]["result"]
    assert result["type"] == "brushlabels" and result["original_width"] == WIDTH
