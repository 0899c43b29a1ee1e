"""CVAT's nuclio functions (`integrations/cvat/nuclio/main.py`) called as nuclio calls them,
`handler(context, event)` with nuclio's own `Context` and `Event` and the bodies CVAT's
lambda manager sends (`cvat/apps/lambda_manager/views.py`), against the service on a real
socket (`local_service`, random weights: the masks' structure is checked, not their
meaning). The interactor's masks are CVAT's full-size `mask`; the detector's are CVAT's
cropped mask with its box, decoded here as CVAT does."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
from pathlib import Path

import nuclio_sdk
import numpy as np
import pytest

from bench.local_service import local_service
from bench.samples import encode_image, random_pixels
from sam3_core.engine import Segmenter
from tests.conftest import tiny_settings

pytestmark = pytest.mark.slow  # a service on a socket; out of the fast tier

NUCLIO = Path(__file__).parents[2] / "integrations" / "cvat" / "nuclio"
HEIGHT, WIDTH = 72, 96
PNG = encode_image(random_pixels(11, HEIGHT, WIDTH))
IMAGE = base64.b64encode(PNG).decode()


def load_functions():
    spec = importlib.util.spec_from_file_location("sam3_cvat_functions", NUCLIO / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def engine(tiny_model) -> Segmenter:
    return Segmenter(tiny_model, tiny_settings(max_concept_instances=3))


@pytest.fixture(scope="module")
def functions(engine, monkeypatch_module):
    with local_service(engine, api_keys="cvat-key") as url:
        monkeypatch_module.setenv("SAM3_URL", url)
        monkeypatch_module.setenv("SAM3_API_KEY", "cvat-key")
        module = load_functions()
        context = nuclio_sdk.Context(logger=nuclio_sdk.Logger(logging.INFO))
        module.init_context(context)
        yield module, context


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def call(handler, context, body: dict) -> tuple[int, object]:
    response = handler(context, nuclio_sdk.Event(body=body, content_type="application/json"))
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


def test_interactor_clicks_send_the_image_once(functions, engine):
    module, context = functions
    before = engine.stats()
    body = {"image": IMAGE, "pos_points": [[40, 30]], "neg_points": [], "obj_bbox": None}
    status, answer = call(module.interactor, context, body)
    assert status == 200, answer
    mask = np.array(answer["mask"], np.uint8)
    assert mask.shape == (HEIGHT, WIDTH)
    assert set(np.unique(mask)) <= {0, 255}
    assert context.user_data.service.image_uploads == 1

    # CVAT sends every point again with each click, and the whole image again.
    body = {**body, "pos_points": [[40, 30], [50, 35]], "neg_points": [[5, 5]],
            "obj_bbox": [[10, 10], [80, 60]]}  # fmt: skip
    status, answer = call(module.interactor, context, body)
    assert status == 200, answer
    assert np.array(answer["mask"]).shape == (HEIGHT, WIDTH)
    assert context.user_data.service.image_uploads == 1  # the digest sufficed
    after = engine.stats()
    assert after.embedding_cache_hits - before.embedding_cache_hits >= 1
    # One embed: the first call's digest-only try (a miss) and its upload (the embed).
    assert after.embedding_cache_entries == before.embedding_cache_entries + 1


def test_detector_masks_per_spec_label(functions):
    module, context = functions
    assert context.user_data.labels == ["person", "car", "bicycle", "dog", "cat"]
    status, shapes = call(module.detector, context, {"image": IMAGE, "threshold": 0.0})
    assert status == 200, shapes
    assert shapes and len(shapes) <= 5 * 3  # SAM3_MAX_CONCEPT_INSTANCES each
    for shape in shapes:
        assert shape["type"] == "mask" and shape["label"] in context.user_data.labels
        assert 0.0 <= float(shape["confidence"]) <= 1.0
        # CVAT's mask: the box's crop row by row, then xtl, ytl, xbr, ybr (inclusive).
        xtl, ytl, xbr, ybr = shape["mask"][-4:]
        assert shape["points"] == [xtl, ytl, xbr, ybr]
        assert 0 <= xtl <= xbr < WIDTH and 0 <= ytl <= ybr < HEIGHT
        crop = np.array(shape["mask"][:-4]).reshape(ybr - ytl + 1, xbr - xtl + 1)
        assert set(np.unique(crop)) <= {0, 1}
        # The box is the mask's: every edge of the crop holds a set pixel.
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


def test_errors_are_answers_not_exceptions(functions, monkeypatch):
    module, context = functions
    status, answer = call(module.interactor, context, {"image": "not base64!"})
    assert status == 400 and answer["code"] == "invalid_image"
    status, answer = call(module.interactor, context, {"pos_points": [[1, 2]]})
    assert status == 400 and answer["code"] == "invalid_request"
    body = {"image": IMAGE, "pos_points": [[float("nan"), 2]], "neg_points": []}
    status, answer = call(module.interactor, context, body)
    assert status == 400 and answer["code"] == "invalid_prompt"
    monkeypatch.setattr(context.user_data.service, "api_key", "wrong")
    status, answer = call(module.detector, context, {"image": IMAGE})
    assert status == 401 and answer["code"] == "unauthorized"
    monkeypatch.setattr(context.user_data.service, "url", "http://127.0.0.1:9")
    status, answer = call(module.detector, context, {"image": IMAGE})
    assert status == 503 and answer["code"] == "unreachable"


def test_spec_labels_match_the_function_yaml():
    module = load_functions()
    assert module.spec_labels(NUCLIO / "function-detector.yaml")[0] == "person"
