"""sam3-serve as the ML backend of a real Label Studio (PyPI `label-studio`, its own venv,
SQLite): a project with a brush config and smart tools, a task with an uploaded image, the
backend connected through Label Studio's API, clicks and a pre-annotation asked for through
Label Studio, and the masks read back from what it stores, decoded by its own SDK.

The service runs in-process behind uvicorn (`local_service`), not on the Ray cluster: the
subject here is the protocol, and the engine's counters show embeds directly; routing by
image is the Ray suite's (`test_label_studio_on_ray.py` runs these routes on the Ray cluster). The
engine serves the demo model (`demo:shapes`, trained on shapes, not SAM3): the click's mask
must land on the square. Its concept detector is untrained, so pre-annotation's masks are
noise and only their structure is checked.

Label Studio's venv is installed once per machine (~1.5 min; bench/label_studio.py) and it
starts in 0.5-4 min on 2 busy cores. Without a package index the test is skipped, except
under CI, where it fails.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from bench import label_studio
from bench.local_service import free_port, local_service
from bench.samples import encode_image
from sam3_core.engine import Segmenter
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

pytestmark = pytest.mark.slow  # installs and starts a real Label Studio

HEIGHT, WIDTH = 96, 128
SQUARE = (slice(20, 60), slice(16, 56))  # rows, columns
CIRCLE_CENTRE, CIRCLE_RADIUS = (48, 94), 20


def shapes() -> tuple[bytes, np.ndarray]:
    """A dark picture with a light square and a circle; and the square's mask."""
    pixels = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
    square = np.zeros((HEIGHT, WIDTH), bool)
    square[SQUARE] = True
    rows, cols = np.ogrid[:HEIGHT, :WIDTH]
    circle = (rows - CIRCLE_CENTRE[0]) ** 2 + (cols - CIRCLE_CENTRE[1]) ** 2 <= CIRCLE_RADIUS**2
    pixels[square] = (220, 60, 40)
    pixels[circle] = (40, 90, 220)
    return encode_image(pixels), square


def keypoint(row: float, col: float, positive: bool = True, label: str = "square") -> dict:
    """A smart keypoint as Label Studio's page sends it (position in percent)."""
    return {
        "id": f"kp{row}-{col}",
        "type": "keypointlabels",
        "from_name": "point",
        "to_name": "image",
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "is_positive": positive,
        "origin": "manual",
        "value": {"x": col / WIDTH * 100, "y": row / HEIGHT * 100, "width": 1,
                  "keypointlabels": [label]},
    }  # fmt: skip


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    try:
        label_studio.venv()
    except (subprocess.CalledProcessError, OSError) as error:
        if os.environ.get("CI"):
            pytest.fail(f"Label Studio {label_studio.VERSION} cannot be installed: {error}")
        pytest.skip(f"Label Studio {label_studio.VERSION} cannot be installed: {error}")
    with label_studio.running(tmp_path_factory.mktemp("label-studio"), free_port()) as studio:
        yield studio


@pytest.fixture(scope="module")
def engine() -> Segmenter:
    # The demo model (trained on shapes, not SAM3): a click's mask lands on its shape. Its
    # concept detector is untrained: pre-annotation keeps every instance (threshold 0) and a
    # few per label, so that Label Studio has masks to store.
    settings = EngineSettings(
        checkpoint="demo:shapes", device="cpu", max_concept_instances=3, max_hole_area=0
    )
    return Segmenter(load_model(settings), settings)


def test_label_studio_clicks_and_pre_annotation(studio, engine):
    png, square = shapes()
    threshold = 0.0
    with local_service(
        engine,
        label_studio_url=studio.url,
        label_studio_api_key=studio.token,
        label_studio_score_threshold=threshold,
    ) as service:
        project = studio.create_project("sam3-serve")
        task = studio.import_image(project, "shapes.png", png)
        assert task["data"]["image"].startswith("/data/upload/")
        backend = studio.connect(project, f"{service}/label-studio")
        assert backend["readable_state"] == "Connected", backend
        assert backend["model_version"] == "sam3-serve/demo:shapes"

        # A click on the square, then a negative one on the circle: one object, refined.
        first = studio.interactive(backend["id"], task["id"], [keypoint(40, 36)])
        regions = [keypoint(40, 36), keypoint(*CIRCLE_CENTRE, positive=False)]
        second = studio.interactive(backend["id"], task["id"], regions)
        for answer in (first, second):
            (result,) = answer["result"]
            assert result["type"] == "brushlabels"
            assert result["value"]["brushlabels"] == ["square"]
            assert (result["from_name"], result["to_name"]) == ("brush", "image")
        stats = engine.stats()
        assert stats.embedding_cache_misses == 1  # embedded once, whatever the clicks
        assert stats.logits_cache_hits >= 1  # the second click refined the first

        # The annotator accepts the mask: Label Studio stores it, its SDK decodes it.
        annotation = studio.annotate(task["id"], second["result"])
        (stored,) = studio.annotation(annotation["id"])["result"]
        (mask,) = studio.decode_brush([stored])
        assert mask.shape == (HEIGHT, WIDTH)
        assert stored["value"]["rle"] == second["result"][0]["value"]["rle"]
        overlap = (mask & square).sum() / (mask | square).sum()
        assert overlap > 0.5, f"the click's mask covers the square at IoU {overlap:.2f}"

        # Pre-annotation: every instance of each label, stored by Label Studio as a prediction.
        studio.retrieve_predictions(project, [task["id"]])
        (prediction,) = studio.predictions(task["id"])
        assert prediction["model_version"] == "sam3-serve/demo:shapes"
        results = prediction["result"]
        assert results, "no instance stored"
        assert len(results) == 2 * 3  # both labels, SAM3_MAX_CONCEPT_INSTANCES each
        assert {r["value"]["brushlabels"][0] for r in results} <= {"square", "circle"}
        assert all(r["score"] >= threshold for r in results)
        for decoded in studio.decode_brush(results):
            assert decoded.shape == (HEIGHT, WIDTH)
        assert engine.stats().embedding_cache_misses == 1  # concepts on the same embedding
