"""Label Studio's ML-backend routes (`deployments/label_studio.py`) on the tiny engine
in-process (random weights: masks are noise, their structure is what is checked), with a
stand-in for Label Studio's file server on 127.0.0.1."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import encode_image, random_pixels
from tests.unit.http_client import make_client
from tests.unit.protocol.test_label_studio import CONFIG, mask_of

PNG = encode_image(random_pixels(5, 60, 80))  # 60 high, 80 wide
UPLOAD = "/data/upload/1/a1b2-photo.png"
TOKEN = "ls-secret"


class LabelStudioFiles(BaseHTTPRequestHandler):
    fetches: list[str] = []

    def do_GET(self):
        if self.headers.get("Authorization") != f"Token {TOKEN}":
            self._send(401, b"no token")
        elif self.path == UPLOAD:
            LabelStudioFiles.fetches.append(self.path)
            self._send(200, PNG)
        else:
            self._send(404, b"no")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def label_studio_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), LabelStudioFiles)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def client(engine, label_studio_url):
    LabelStudioFiles.fetches.clear()
    return make_client(engine, label_studio_url=label_studio_url, label_studio_api_key=TOKEN)[0]


def keypoint(x: float, y: float, positive: bool = True) -> dict:
    return {
        "type": "keypointlabels",
        "original_width": 80,
        "original_height": 60,
        "is_positive": positive,
        "value": {"x": x, "y": y, "keypointlabels": ["square"]},
    }


def predict(client, image: str = UPLOAD, regions: list | None = None, **extra):
    body = {
        "tasks": [{"id": 1, "data": {"picture": image}}],
        "label_config": CONFIG,
        "project": "1.1700000000",
        "params": {
            "login": None,
            "password": None,
            "context": {"result": regions} if regions is not None else None,
        },
        **extra,
    }
    return client.post("/label-studio/predict", json=body)


def test_health_setup_webhook(client):
    for path in ("/label-studio/", "/label-studio/health"):
        assert client.get(path).json() == {"status": "UP", "model_class": "Sam3Serve"}
    setup = client.post("/label-studio/setup", json={"project": "1.17", "schema": CONFIG})
    assert setup.status_code == 200 and setup.json() == {"model_version": "sam3-serve/random:tiny"}
    refused = client.post("/label-studio/setup", json={"project": "1.17", "schema": "<View/>"})
    assert refused.status_code == 400 and "BrushLabels" in refused.json()["message"]
    hook = client.post("/label-studio/webhook", json={"action": "ANNOTATION_CREATED"})
    assert hook.status_code == 201 and hook.json()["status"] == "ok"
    other = client.post("/label-studio/webhook", json={"action": "PROJECT_UPDATED"})
    assert other.status_code == 200 and other.json() == {"status": "Unknown event"}
    # Label Studio's protocol stays out of the service's own OpenAPI document.
    assert not [p for p in client.get("/openapi.json").json()["paths"] if "label-studio" in p]


def test_clicks_refine_one_embedding_fetched_once(client, engine):
    first = predict(client, regions=[keypoint(25, 50)])
    assert first.status_code == 200, first.text
    assert first.headers["x-sam3-embedding-cache"] == "miss"
    (prediction,) = first.json()["results"]
    (result,) = prediction["result"]
    assert result["type"] == "brushlabels" and result["value"]["brushlabels"] == ["square"]
    assert (result["from_name"], result["to_name"]) == ("brush", "img")
    assert (result["original_width"], result["original_height"]) == (80, 60)
    assert mask_of(result["value"]["rle"], 60, 80).shape == (60, 80)
    assert prediction["model_version"] == "sam3-serve/random:tiny"

    second = predict(client, regions=[keypoint(25, 50), keypoint(75, 20, positive=False)])
    assert second.status_code == 200, second.text
    assert second.headers["x-sam3-embedding-cache"] == "hit"
    assert second.headers["x-sam3-logits-cache"] == "hit"  # refined from the first click
    assert LabelStudioFiles.fetches == [UPLOAD]  # known by digest after the first fetch
    assert engine.stats().embedding_cache_misses == 1


def test_pre_annotation_asks_for_every_label(client, engine):
    response = predict(client, label_config=CONFIG)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    labels = {r["value"]["brushlabels"][0] for r in prediction["result"]}
    assert labels <= {"square", "circle"}
    for result in prediction["result"]:
        assert mask_of(result["value"]["rle"], 60, 80).shape == (60, 80)
        assert 0.5 <= result["score"] <= 1  # SAM3_LABEL_STUDIO_SCORE_THRESHOLD
    # Every instance the concept route finds for the labels, nothing else.
    direct = client.post(
        "/sam3/concept_segment",
        json={
            "image": {"type": "base64", "value": base64.b64encode(PNG).decode()},
            "prompts": [{"text": "square"}, {"text": "circle"}],
        },
    ).json()
    found = sum(len(r["predictions"]) for r in direct["prompt_results"])
    assert len(prediction["result"]) == found


def test_data_uri_and_url_images(client):
    data_uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    response = predict(client, image=data_uri, regions=[keypoint(50, 50)])
    assert response.status_code == 200, response.text
    assert LabelStudioFiles.fetches == []
    refused = predict(client, image="https://example.com/a.png", regions=[keypoint(5, 5)])
    assert refused.status_code == 400 and "SAM3_ALLOW_URL_INPUT" in refused.json()["message"]
    unknown = predict(client, image="s3://bucket/a.png", regions=[keypoint(5, 5)])
    assert unknown.status_code == 400 and unknown.json()["code"] == "invalid_image"


def test_label_studio_paths_need_its_address(engine):
    plain = make_client(engine)[0]
    response = predict(plain, regions=[keypoint(5, 5)])
    assert response.status_code == 400 and "SAM3_LABEL_STUDIO_URL" in response.json()["message"]


def test_bad_bodies_are_4xx(client):
    negative_box = {**keypoint(5, 5), "type": "rectanglelabels", "is_positive": False}
    negative_box["value"] = {"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["a"]}
    assert predict(client, regions=[negative_box]).status_code == 400
    no_image = client.post(
        "/label-studio/predict",
        json={"tasks": [{"data": {}}], "label_config": CONFIG, "params": {}},
    )
    assert no_image.status_code == 400 and "data.picture" in no_image.json()["message"]
    assert client.post("/label-studio/predict", json={"tasks": 3}).status_code == 422
    odd_data = {"tasks": [{"data": [1]}], "label_config": CONFIG, "params": {}}
    assert client.post("/label-studio/predict", json=odd_data).status_code == 400
    elsewhere = predict(client, image="//169.254.169.254/latest", regions=[keypoint(5, 5)])
    assert elsewhere.status_code == 400 and elsewhere.json()["code"] == "url_input_refused"
    assert client.post("/label-studio/webhook", content=b"not json").status_code == 200


def test_an_evicted_image_is_fetched_again(client, engine):
    assert predict(client, regions=[keypoint(25, 50)]).status_code == 200
    for key in engine.pictures.image_keys():
        assert engine.pictures.drop_image(key)
    response = predict(client, regions=[keypoint(30, 50)])
    assert response.status_code == 200, response.text
    assert response.headers["x-sam3-embedding-cache"] == "miss"
    assert LabelStudioFiles.fetches == [UPLOAD, UPLOAD]


def test_keys_basic_auth_and_tenants(engine, label_studio_url):
    client = make_client(
        engine, api_keys="k-one", label_studio_url=label_studio_url, label_studio_api_key=TOKEN
    )[0]
    assert predict(client, regions=[keypoint(5, 5)]).status_code == 401
    good = base64.b64encode(b"labelstudio:k-one").decode()
    client.headers["Authorization"] = f"Basic {good}"
    assert predict(client, regions=[keypoint(5, 5)]).status_code == 200
    client.headers["Authorization"] = "Basic " + base64.b64encode(b"u:wrong").decode()
    assert predict(client, regions=[keypoint(5, 5)]).status_code == 401
