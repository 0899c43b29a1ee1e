"""The page in a real Chromium with the demo model (SAM3_CHECKPOINT=demo:shapes, trained on
synthetic shapes, not SAM3): a sample scene opened from the page's menu, a click on a shape in
the canvas gives that shape's mask (the canvas maps screen pixels to image pixels), both in
the request the page sends and in what it draws."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np
import pytest
from playwright.sync_api import Browser, expect

from bench.harness import LocalCluster
from sam3_core.demo.scenes import sample_scenes
from sam3_core.demo.weights import demo_checkpoint_path
from tests.integration.serving import deploy
from tests.integration.test_demo_model import DEMO_ENGINE
from tests.integration.test_page import Annotator, browser  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.ray, pytest.mark.browser]


@pytest.fixture(scope="module")
def demo_page_service(service: LocalCluster) -> LocalCluster:
    deploy(service, 1, args={"engine": DEMO_ENGINE})
    return service


@pytest.fixture
def annotator(browser: Browser, demo_page_service: LocalCluster) -> Iterator[Annotator]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    annotator = Annotator(page, demo_page_service.url)
    page.goto(demo_page_service.url + "/?decode=server")  # the click is read off the wire
    yield annotator
    context.close()
    assert not annotator.errors, annotator.errors


def test_a_click_on_a_shape_in_the_canvas_gives_that_shape(annotator):
    page = annotator.page
    # The header says what is served: not SAM3, with its held-out scores.
    scores = json.loads(demo_checkpoint_path("demo:shapes").with_suffix(".json").read_text())
    badge = page.get_by_test_id("served-model")
    expect(badge).to_have_text("Demo model · not SAM3")
    click = scores["held_out"]["centre_click_miou"]
    expect(badge).to_have_attribute("title", re.compile(rf"centre click IoU {click:.2f}"))
    scene = sample_scenes()[0]
    page.get_by_test_id("sample-scenes").select_option("scene-1.png")
    annotator.expect_status(r"embed_image · \d+ ms")
    height, width = scene.image.shape[:2]
    # Where the image lies on the screen: the canvas's centre is the image's centre; one
    # click a known distance off it tells the scale.
    cx, cy = annotator.centre()
    page.mouse.click(cx, cy)
    annotator.wait_objects(1)
    (first,) = annotator.last("visual_segment")["body"]["prompts"][0]["points"]
    page.keyboard.press("Escape")
    assert (first["x"], first["y"]) == (
        pytest.approx(width / 2, abs=0.6),
        pytest.approx(height / 2, abs=0.6),
    )
    page.keyboard.press("n")
    page.mouse.click(cx + 100, cy)
    annotator.wait_objects(2)
    (second,) = annotator.last("visual_segment")["body"]["prompts"][0]["points"]
    scale = 100 / (second["x"] - first["x"])  # screen pixels per image pixel
    page.keyboard.press("Escape")

    # The largest shape: click its centre on the screen.
    target = int(np.argmax(scene.masks.sum(axis=(1, 2))))
    x, y = scene.centre_click(target)
    before = annotator.canvas()
    page.keyboard.press("n")
    page.mouse.click(cx + (x - width / 2) * scale, cy + (y - height / 2) * scale)
    annotator.wait_objects(3)
    (sent,) = annotator.last("visual_segment")["body"]["prompts"][0]["points"]
    assert (sent["x"], sent["y"]) == (pytest.approx(x, abs=1.0), pytest.approx(y, abs=1.0))

    # What the page drew: the pixels that changed lie on the clicked shape.
    after = annotator.canvas()
    drawn = np.any(before != after, axis=-1)
    box = page.get_by_test_id("canvas").bounding_box()
    rows = (np.arange(drawn.shape[0]) + 0.5) * box["height"] / drawn.shape[0] + box["y"]
    cols = (np.arange(drawn.shape[1]) + 0.5) * box["width"] / drawn.shape[1] + box["x"]
    image_y = ((rows - cy) / scale + height / 2).astype(int)
    image_x = ((cols - cx) / scale + width / 2).astype(int)
    inside = (image_y[:, None] >= 0) & (image_y[:, None] < height)
    inside = inside & (image_x[None] >= 0) & (image_x[None] < width)
    on_shape = np.zeros_like(drawn)
    ys, xs = np.nonzero(inside)
    on_shape[ys, xs] = scene.masks[target][image_y[ys], image_x[xs]]
    assert drawn.sum() > 0.3 * on_shape.sum(), "no mask was drawn"
    precision = (drawn & on_shape).sum() / drawn.sum()
    recall = (drawn & on_shape).sum() / on_shape.sum()
    assert precision > 0.6 and recall > 0.6, (precision, recall)
