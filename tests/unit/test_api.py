"""The HTTP API without Ray: FastAPI's test client, the tiny engine in-process behind it."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pycocotools import mask as coco_mask

from bench.samples import flat_image, image_body
from deployments.api import create_api
from deployments.operations import Operation, Reply
from deployments.owners import LocalOwners, ServiceUnavailableError, owner_key
from deployments.settings import IngressSettings
from sam3_core import Segmenter, SegmentRequest
from sam3_core.calls import ConceptRequest, ImageRequest
from sam3_core.concept_prompts import ConceptPrompt
from sam3_core.images import content_id
from sam3_core.protocol.masks import masks_to_rle
from tests.conftest import encode_image, png_header, random_pixels


class InProcessOwners(LocalOwners):
    """The engine in-process as the only "replica", recording segment requests."""

    def __init__(self, engine: Segmenter) -> None:
        super().__init__(engine)
        self.calls: list[SegmentRequest] = []
        self.unavailable = False

    async def call(self, operation: Operation, request: ImageRequest) -> Reply:
        if self.unavailable:
            raise ServiceUnavailableError("owner restarting", retry_after_s=2.2)
        if isinstance(request, SegmentRequest):
            self.calls.append(request)
        return await super().call(operation, request)


@pytest.fixture
def engine(make_segmenter) -> Segmenter:
    return make_segmenter(embedding_cache_bytes=2**26)


def make_client(engine: Segmenter, **settings) -> tuple[TestClient, InProcessOwners]:
    backend = InProcessOwners(engine)
    app = create_api(backend, IngressSettings(**settings))
    return TestClient(app, raise_server_exceptions=False), backend


@pytest.fixture
def api(engine) -> TestClient:
    return make_client(engine)[0]


PNG = encode_image(random_pixels(3, 90, 120))
B64 = base64.b64encode(PNG).decode()
OTHER_B64 = base64.b64encode(encode_image(random_pixels(4, 90, 120))).decode()
CLICK = {"points": [{"x": 30, "y": 40, "positive": True}]}


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


class TestApiKeys:
    @pytest.fixture
    def secured(self, engine) -> TestClient:
        return make_client(engine, api_keys="k-one, k-two")[0]

    def test_every_route_but_healthz_needs_a_key(self, secured):
        assert secured.get("/healthz").status_code == 200
        for method, path in [
            ("get", "/docs"),
            ("get", "/openapi.json"),
            ("post", "/sam3/embed_image"),
            ("post", "/sam3/visual_segment"),
        ]:
            response = getattr(secured, method)(path)
            assert response.status_code == 401, path
            assert response.json()["code"] == "unauthorized"

    def test_bearer_query_and_body(self, secured):
        body = {"image": {"type": "base64", "value": B64}}
        assert (
            secured.post(
                "/sam3/embed_image", json=body, headers={"Authorization": "Bearer k-two"}
            ).status_code
            == 200
        )
        assert secured.post("/sam3/embed_image?api_key=k-one", json=body).status_code == 200
        assert (
            secured.post("/sam3/embed_image", json={**body, "api_key": "k-one"}).status_code == 200
        )

    def test_wrong_keys(self, secured):
        body = {"image": {"type": "base64", "value": B64}}
        assert (
            secured.post(
                "/sam3/embed_image", json=body, headers={"Authorization": "Bearer nope"}
            ).status_code
            == 401
        )
        assert (
            secured.post(
                "/sam3/embed_image", json=body, headers={"Authorization": "Basic azE6"}
            ).status_code
            == 401
        )
        assert secured.post("/sam3/embed_image?api_key=k-on", json=body).status_code == 401
        assert secured.post("/sam3/embed_image", json={**body, "api_key": 1}).status_code == 401
        # A wrong header key is not rescued by a right body key.
        assert (
            secured.post(
                "/sam3/embed_image",
                json={**body, "api_key": "k-one"},
                headers={"Authorization": "Bearer x"},
            ).status_code
            == 401
        )

    def test_auth_comes_before_schema_errors(self, secured):
        assert secured.post("/sam3/visual_segment", json={"prompts": "nonsense"}).status_code == 401

    def test_keys_are_not_logged(self, engine, caplog):
        api, _ = make_client(engine, api_keys="secret-key-123")
        api.post("/sam3/embed_image?api_key=wrong-key-456", json={})
        api.post(
            "/sam3/embed_image",
            json={"image": {"type": "url", "value": "x"}},
            headers={"Authorization": "Bearer secret-key-123"},
        )
        assert "secret-key-123" not in caplog.text and "wrong-key-456" not in caplog.text


WEB = Path(__file__).parents[2] / "deployments" / "web"
TEST_IDS = (
    "image-input",
    "canvas",
    "concept-input",
    "concept-submit",
    "object-list",
    "export-coco",
    "status",
)


def linked(html: str) -> list[str]:
    """The URLs an HTML page loads: src and href attributes, CSS url()s."""
    attributes = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    return attributes + re.findall(r"""url\(["']?([^"')]+)""", html)


class TestPageAndDocs:
    def test_the_page_is_served_with_its_test_hooks(self, api):
        page = api.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for test_id in TEST_IDS:
            assert f'data-testid="{test_id}"' in page.text, test_id
        assets = [url for url in linked(page.text) if url != "docs"]
        assert {"page/app.js", "page/style.css"} <= set(assets)
        for url in assets:
            response = api.get("/" + url)
            assert response.status_code == 200, url
        assert api.get("/page/app.js").headers["content-type"].startswith("text/javascript")

    def test_the_page_loads_nothing_from_other_hosts(self):
        """No CDN: it must work in a cluster without internet."""
        for path in WEB.iterdir():
            text = path.read_text()
            for url in linked(text):
                assert not urlsplit(url).netloc and not url.startswith("//"), (path.name, url)
            imports = re.findall(r'^import .* from "([^"]+)";', text, re.M)
            assert all(module.startswith("./") for module in imports), (path.name, imports)

    def test_the_page_ships_inside_the_package(self):
        """setuptools' package data carries the page (pip, wheel, Docker image)."""
        pyproject = (WEB.parents[1] / "pyproject.toml").read_text()
        (globs,) = re.findall(
            r"\[tool\.setuptools\.package-data\]\n(?:#.*\n)*deployments = \[(.+)\]", pyproject
        )
        patterns = re.findall(r'"([^"]+)"', globs)
        shipped = {path for pattern in patterns for path in WEB.parent.glob(pattern)}
        assert shipped == set(WEB.iterdir()) and WEB / "index.html" in shipped

    @pytest.mark.parametrize("path", ["/docs", "/redoc"])
    def test_docs_load_their_assets_from_the_service(self, api, path):
        html = api.get(path)
        assert html.status_code == 200
        urls = linked(html.text)
        assert urls, html.text
        for url in urls:
            assert not urlsplit(url).netloc, f"{path} loads {url} from another host"
            assert api.get(url).status_code == 200, url
        assert "fonts.googleapis" not in html.text

    def test_with_keys_the_page_and_doc_assets_need_none_and_the_api_does(self, engine):
        secured = make_client(engine, api_keys="k-one")[0]
        for path in (
            "/",
            "/page/app.js",
            "/page/style.css",
            "/static-offline-docs/swagger-ui-bundle.js",
        ):
            assert secured.get(path).status_code == 200, path
        for path in ("/sam3/embed_image", "/sam3/visual_segment"):
            assert secured.post(path, json={}).status_code == 401, path
        # The open prefix serves files only: a path that climbs out of it is not the API.
        climbed = secured.get("/page/%2e%2e/openapi.json")
        assert climbed.status_code == 404 and "paths" not in climbed.text


def test_openapi_documents_the_routes(api):
    spec = api.get("/openapi.json").json()
    assert {"/sam3/embed_image", "/sam3/visual_segment", "/healthz"} <= set(spec["paths"])
    responses = spec["paths"]["/sam3/visual_segment"]["post"]["responses"]
    assert {"200", "400", "404", "413", "422", "503"} <= set(responses)
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


class TestTenants:
    """With API keys, each key sees only the images it sent (SPEC §10)."""

    @pytest.fixture
    def secured(self, engine) -> TestClient:
        return make_client(engine, api_keys="k-one, k-two")[0]

    def test_another_key_can_neither_click_nor_overwrite(self, secured):
        one, two = {"Authorization": "Bearer k-one"}, {"Authorization": "Bearer k-two"}
        mine = {"image": {"type": "base64", "value": B64}, "image_id": "shared-name"}
        assert secured.post("/sam3/embed_image", json=mine, headers=one).status_code == 200
        click = {"image_id": "shared-name", "prompts": CLICK, "format": "rle"}
        other = secured.post("/sam3/visual_segment", json=click, headers=two)
        assert other.status_code == 404 and other.json()["code"] == "image_not_cached"
        theirs = {**mine, "image": {"type": "base64", "value": OTHER_B64}}
        response = secured.post("/sam3/embed_image", json=theirs, headers=two)
        assert response.headers["x-sam3-embedding-cache"] == "miss"  # a separate entry
        own = secured.post("/sam3/visual_segment", json=click, headers=one)
        direct = secured.post(
            "/sam3/visual_segment",
            json={"image": {"type": "base64", "value": B64}, "prompts": CLICK, "format": "rle"},
            headers=one,
        )
        assert own.json()["predictions"] == direct.json()["predictions"]
        # The key in the body names the same tenant as in the header.
        body_key = secured.post("/sam3/visual_segment", json={**click, "api_key": "k-one"})
        assert body_key.status_code == 200
        for response in (own, other, body_key):
            assert not any("k-one" in v or "k-two" in v for v in response.headers.values())

    def test_routing_keeps_one_owner_per_tenant_and_id(self):
        mine = ImageRequest(image_id="x", tenant="aaaa")
        assert owner_key(mine) != owner_key(ImageRequest(image_id="x", tenant="bbbb"))
        assert owner_key(ImageRequest(image_id="x")) == "x"


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
