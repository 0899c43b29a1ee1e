"""The annotation page in a real Chromium (Playwright), against the real service: the
session's local Ray cluster, through Ray's HTTP proxy, with the tiny random-weights model
(masks are noise, but deterministic: what the page shows is compared with what the API
gives for the same prompts)."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from skimage import data as photos

from bench.browser import chromium, chromium_path
from bench.harness import TINY_ENGINE, LocalCluster, app_config, running, wait_for
from bench.samples import image_body, random_image
from deployments.config import APP_NAME, deploy_config
from tests.conftest import unavailable
from tests.integration.serving import deploy

pytestmark = [pytest.mark.ray, pytest.mark.browser]

HEIGHT, WIDTH = 300, 451  # skimage's chelsea
KEY = "page-test-key"
CONCEPT = "/sam3/concept_segment"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        unavailable("no chromium on the PATH: `apt-get install chromium` (.ci/run does)")
    with chromium(path) as browser:
        yield browser


@pytest.fixture(scope="module")
def served(service: LocalCluster) -> LocalCluster:
    """One segmenter whose cache holds one image: embedding another evicts the page's."""
    deploy(service, 1, args={"engine": {**TINY_ENGINE, "max_embedding_cache_size": 1}})
    return service


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(photos.chelsea()).save(path)
    assert Image.open(path).size == (WIDTH, HEIGHT)
    return path


class Annotator:
    """The page, driven as a person would, with the API calls it made."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.calls: list[dict] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        # What the page's content security policy refused (a blocked module, worker, ...).
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        page.on("response", self._record)

    def _record(self, response) -> None:
        if "/sam3/" not in response.url:
            return
        request = response.request
        self.calls.append(
            {
                "route": response.url.rsplit("/", 1)[-1],
                "status": response.status,
                "body": request.post_data_json,
                "authorization": request.headers.get("authorization"),
                "headers": response.headers,
            }
        )

    def routes(self) -> list[tuple[str, int]]:
        return [(call["route"], call["status"]) for call in self.calls]

    def last(self, route: str) -> dict:
        return [call for call in self.calls if call["route"] == route][-1]

    def open(self, path: Path) -> str:
        """Open an image with the file picker; returns the id it was embedded under."""
        self.page.get_by_test_id("image-input").set_input_files(path)
        self.expect_status(r"embed_image · \d+ ms .*embedding (hit|miss)")
        return self.last("embed_image")["headers"]["x-sam3-image-id"]

    def expect_status(self, pattern: str) -> None:
        expect(self.page.get_by_test_id("status")).to_have_text(re.compile(pattern))

    def centre(self) -> tuple[float, float]:
        box = self.page.get_by_test_id("canvas").bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def wait_objects(self, count: int) -> None:
        """`count` objects listed, none waiting for its mask."""
        objects = self.page.get_by_test_id("object-list").get_by_test_id("object")
        expect(objects).to_have_count(count)
        if count:
            expect(self.page.locator("[data-testid=object].pending")).to_have_count(0)

    def canvas(self) -> np.ndarray:
        """(H, W, 4) uint8: the canvas's pixels."""
        url = self.page.get_by_test_id("canvas").evaluate("canvas => canvas.toDataURL()")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))

    def download(self, test_id: str, into: Path) -> Path:
        with self.page.expect_download() as download:
            self.page.get_by_test_id(test_id).click()
        path = into / download.value.suggested_filename
        download.value.save_as(path)
        return path


@pytest.fixture
def annotator(browser: Browser, served: LocalCluster) -> Iterator[Annotator]:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page = context.new_page()
    annotator = Annotator(page, served.url)
    page.goto(served.url + "/?decode=server")  # test_page_decoder.py: the browser decodes
    yield annotator
    context.close()
    assert not annotator.errors, annotator.errors


def changed(before: np.ndarray, after: np.ndarray) -> float:
    """The fraction of pixels that differ."""
    return float(np.any(before != after, axis=-1).mean())


def api_mask(service: LocalCluster, photo: Path, prompt: dict, **options) -> np.ndarray:
    """The service's mask for one prompt on the photo, asked directly: (H, W) uint8."""
    body = {"image": image_body(photo.read_bytes()), "prompts": [prompt], "format": "rle"}
    response = service.post("/sam3/visual_segment", {**body, **options})
    (prediction,) = response.json()["predictions"]
    return coco_mask.decode(prediction["masks"])


def test_click_negative_click_box_undo_redo_and_delete(annotator, photo):
    page = annotator.page
    image_id = annotator.open(photo)
    blank = annotator.canvas()
    cx, cy = annotator.centre()

    # A click: an object, its mask drawn, the request by id with the logits cache.
    page.mouse.click(cx, cy)
    annotator.wait_objects(1)
    annotator.expect_status(r"visual_segment · \d+ ms .*embedding hit")
    assert changed(blank, annotator.canvas()) > 0.05, "no mask was drawn"
    first = annotator.last("visual_segment")["body"]
    (point,) = first.pop("prompts")[0]["points"]
    assert first == {
        "image_id": image_id,
        "format": "rle",
        "multimask_output": True,
        "save_logits_to_cache": True,
        "load_logits_from_cache": True,
    }
    # The canvas's centre is the image's: screen coordinates map back to image pixels.
    assert point["positive"] is True
    assert (point["x"], point["y"]) == (
        pytest.approx(WIDTH / 2, abs=0.6),
        pytest.approx(HEIGHT / 2, abs=0.6),
    )

    # A right click and a shift-click refine the same object with negative points, seeded
    # by the logits of the click before.
    page.mouse.click(cx + 90, cy + 45, button="right")
    annotator.wait_objects(1)
    annotator.expect_status(r"logits hit")
    page.keyboard.down("Shift")
    page.mouse.click(cx - 90, cy + 45)
    page.keyboard.up("Shift")
    annotator.wait_objects(1)
    points = annotator.last("visual_segment")["body"]["prompts"][0]["points"]
    assert [p["positive"] for p in points] == [True, False, False]
    assert annotator.last("visual_segment")["body"]["multimask_output"] is False
    scale = 90 / (points[1]["x"] - points[0]["x"])  # screen pixels per image pixel
    assert (points[1]["y"] - points[0]["y"]) * scale == pytest.approx(45, abs=0.5)

    # Esc deselects; a drag draws a box: a second object.
    page.keyboard.press("Escape")
    deselected = annotator.canvas()
    page.mouse.move(cx - 200, cy - 120)
    page.mouse.down()
    page.mouse.move(cx - 120, cy - 60, steps=4)
    page.mouse.move(cx - 40, cy + 20, steps=4)
    page.mouse.up()
    annotator.wait_objects(2)
    (prompt,) = annotator.last("visual_segment")["body"]["prompts"]
    assert set(prompt) == {"box"}
    box = prompt["box"]  # centre and size
    assert box["width"] * scale == pytest.approx(160, abs=1)
    assert box["height"] * scale == pytest.approx(140, abs=1)
    assert (box["x"] - WIDTH / 2) * scale == pytest.approx(-120, abs=1)
    page.keyboard.press("Escape")
    with_box = annotator.canvas()
    assert changed(deselected, with_box) > 0.01

    # Undo, redo (both shortcuts), and what the canvas shows at each step.
    page.keyboard.press("Control+z")
    annotator.wait_objects(1)
    assert changed(deselected, annotator.canvas()) == 0
    page.keyboard.press("Control+Shift+z")
    annotator.wait_objects(2)
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+y")
    annotator.wait_objects(2)
    assert changed(with_box, annotator.canvas()) == 0

    # Select the first object from the list and delete it; undo brings it back.
    objects = page.get_by_test_id("object")
    objects.nth(0).locator(".swatch").click()
    expect(objects.nth(0)).to_have_class(re.compile("selected"))
    page.keyboard.press("Delete")
    annotator.wait_objects(1)
    page.keyboard.press("Control+z")
    annotator.wait_objects(2)
    # Hidden, an object's mask is not drawn: the canvas is as before the box.
    objects.nth(1).get_by_role("button", name="Hide object 2").click()
    assert changed(deselected, annotator.canvas()) == 0
    assert not any(status >= 400 for _, status in annotator.routes())


def test_export_coco_and_png_mask(annotator, photo, served, tmp_path):
    page = annotator.page
    annotator.open(photo)
    cx, cy = annotator.centre()
    page.mouse.click(cx - 60, cy - 30)
    annotator.wait_objects(1)
    page.get_by_test_id("object").nth(0).get_by_role("textbox").fill("cat")
    page.keyboard.press("Escape")
    page.mouse.move(cx + 20, cy + 10)
    page.mouse.down()
    page.mouse.move(cx + 150, cy + 120, steps=5)
    page.mouse.up()
    annotator.wait_objects(2)
    first, second = (call["body"]["prompts"][0] for call in annotator.calls[-2:])
    label = page.get_by_test_id("object").nth(1).get_by_role("textbox")
    expect(label).to_have_value("cat")  # a new object takes the last label
    label.fill("ear")

    coco = COCO(str(annotator.download("export-coco", tmp_path)))
    assert coco.imgs[1]["width"] == WIDTH and coco.imgs[1]["height"] == HEIGHT
    assert coco.imgs[1]["file_name"] == "chelsea.png"
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "ear"]
    annotations = coco.loadAnns(coco.getAnnIds())
    assert [a["category_id"] for a in annotations] == [1, 2]
    masks = [coco.annToMask(a) for a in annotations]
    for annotation, mask in zip(annotations, masks, strict=True):
        rle = coco_mask.encode(np.asfortranarray(mask))
        assert mask.shape == (HEIGHT, WIDTH)
        assert annotation["area"] == mask.sum() > 0
        assert annotation["bbox"] == coco_mask.toBbox(rle).tolist()
    # Each is the service's own mask for its prompt.
    assert np.array_equal(masks[0], api_mask(served, photo, first))
    assert np.array_equal(masks[1], api_mask(served, photo, second, multimask_output=False))

    exported = Image.open(annotator.download("export-png", tmp_path))
    assert exported.mode == "L"  # one channel: the object numbers
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[masks[0] > 0] = 1
    expected[masks[1] > 0] = 2
    assert np.array_equal(np.asarray(exported), expected)


def test_rle_decoder_matches_pycocotools(annotator):
    rng = np.random.default_rng(0)
    masks = [
        rng.random((37, 53)) > 0.5,
        np.zeros((20, 30), bool),
        np.ones((31, 17), bool),
        np.pad(np.ones((150, 240), bool), ((40, 110), (100, 60))),
        rng.random((300, 451)) > 0.97,
    ]
    rles = [coco_mask.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    as_json = [{"size": r["size"], "counts": r["counts"].decode()} for r in rles]
    decoded = annotator.page.evaluate(
        """async (rles) => {
            const rle = await import("./page/rle.js");
            return rles.map((r) => {
                const mask = rle.decodeRle(r);
                return {mask: Array.from(mask), ...rle.maskStats(mask, r.size[1], r.size[0])};
            });
        }""",
        as_json,
    )
    for mask, rle, out in zip(masks, rles, decoded, strict=True):
        assert np.array_equal(np.array(out["mask"], bool).reshape(mask.shape), mask)
        assert out["area"] == coco_mask.area(rle)
        assert out["bbox"] == coco_mask.toBbox(rle).tolist()
    # Runs longer than 32-bit shifts reach: a 6000 x 6000 mask with one hole.
    big = np.ones((6000, 6000), np.uint8)
    big[5999, 5999] = 0
    counts = coco_mask.encode(np.asfortranarray(big))["counts"].decode()
    stats = annotator.page.evaluate(
        """async (counts) => {
            const rle = await import("./page/rle.js");
            const mask = rle.decodeRle({size: [6000, 6000], counts});
            return rle.maskStats(mask, 6000, 6000);
        }""",
        counts,
    )
    assert stats == {"area": 6000 * 6000 - 1, "bbox": [0, 0, 6000, 6000]}


def test_an_evicted_image_is_sent_again_and_the_click_retried(annotator, photo, served):
    image_id = annotator.open(photo)
    # Another image takes the segmenter's only cache slot (an eviction, as under load).
    served.post("/sam3/embed_image", {"image": image_body(random_image(5))})
    gone = served.post("/sam3/visual_segment", {"image_id": image_id, "prompts": []})
    assert gone.status_code == 404

    cx, cy = annotator.centre()
    annotator.page.mouse.click(cx, cy)
    annotator.wait_objects(1)
    annotator.expect_status(r"visual_segment · \d+ ms .*image sent again")
    assert annotator.routes()[-3:] == [
        ("visual_segment", 404),
        ("embed_image", 200),
        ("visual_segment", 200),
    ]
    resent = annotator.calls[-2]["body"]
    assert resent["image_id"] == image_id and resent["image"]["type"] == "base64"
    assert "error" not in (annotator.page.get_by_test_id("status").get_attribute("class") or "")


def test_drop_an_image_and_click_from_the_keyboard(annotator, photo):
    page = annotator.page
    encoded = base64.b64encode(photo.read_bytes()).decode()
    page.get_by_test_id("canvas").evaluate(
        """(canvas, encoded) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            canvas.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
        }""",
        encoded,
    )
    annotator.expect_status(r"embed_image · \d+ ms")
    page.get_by_test_id("canvas").focus()
    page.keyboard.press("n")  # a new object, selected
    annotator.wait_objects(1)
    for key in ("ArrowRight", "ArrowRight", "Shift+ArrowDown", "Enter"):
        page.keyboard.press(key)
    annotator.wait_objects(1)
    (point,) = annotator.last("visual_segment")["body"]["prompts"][0]["points"]
    assert point["positive"] and point["x"] > WIDTH / 2 and point["y"] > HEIGHT / 2
    page.keyboard.press("Shift+Enter")
    annotator.wait_objects(1)
    points = annotator.last("visual_segment")["body"]["prompts"][0]["points"]
    assert [p["positive"] for p in points] == [True, False]


def test_concept_text_adds_every_instance_as_an_object(annotator, photo, served):
    image_id = annotator.open(photo)
    body = {
        "image_id": image_id,
        "prompts": [{"type": "text", "text": "cat"}],
        "format": "rle",
        "output_prob_thresh": 0.5,
    }
    expected = served.post(CONCEPT, body).json()["prompt_results"][0]["predictions"]
    annotator.page.get_by_test_id("concept-input").fill("cat")
    annotator.page.get_by_test_id("concept-submit").click()
    annotator.expect_status(r"concept_segment · \d+ ms")
    annotator.wait_objects(len(expected))
    assert annotator.last("concept_segment")["body"] == body
    labels = annotator.page.get_by_test_id("object").get_by_role("textbox")
    assert [labels.nth(i).input_value() for i in range(len(expected))] == ["cat"] * len(expected)


def test_concept_answers_of_spec_shape_become_objects(annotator, photo, tmp_path):
    """The page reads concept_segment's response: answered here by the browser's router, so this
    runs whether or not the service already serves concepts."""
    size = [HEIGHT, WIDTH]
    instances = [np.zeros((HEIGHT, WIDTH), np.uint8) for _ in range(2)]
    instances[0][20:80, 30:120] = 1
    instances[1][150:290, 200:440] = 1
    predictions = [
        {
            "masks": {
                "size": size,
                "counts": coco_mask.encode(np.asfortranarray(m))["counts"].decode(),
            },
            "confidence": c,
            "format": "rle",
        }
        for m, c in zip(instances, (0.9, 0.7), strict=True)
    ]
    answer = {
        "prompt_results": [
            {
                "prompt_index": 0,
                "echo": {"prompt_index": 0, "type": "text", "text": "cat", "num_boxes": 0},
                "predictions": predictions,
            }
        ],
        "time": 0.01,
    }
    annotator.page.route(
        "**/sam3/concept_segment",
        lambda route: route.fulfill(
            status=200,
            content_type="application/json",
            headers={"x-sam3-embedding-cache": "hit", "x-sam3-replica": "router"},
            body=json.dumps(answer),
        ),
    )
    annotator.open(photo)
    annotator.page.get_by_test_id("concept-input").fill("cat")
    annotator.page.get_by_test_id("concept-input").press("Enter")
    annotator.wait_objects(2)
    annotator.expect_status(r"concept_segment · \d+ ms .*embedding hit.*2 “cat” found")
    coco = COCO(str(annotator.download("export-coco", tmp_path)))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert [a["bbox"] for a in annotations] == [[30, 20, 90, 60], [200, 150, 240, 140]]
    assert [a["score"] for a in annotations] == [0.9, 0.7]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat"]
    # Clicking an instance refines it from its bounding box.
    cx, cy = annotator.centre()
    annotator.page.get_by_test_id("object").nth(1).click()
    annotator.page.mouse.click(cx + 60, cy + 60)
    annotator.wait_objects(2)
    (prompt,) = annotator.last("visual_segment")["body"]["prompts"]
    assert prompt["box"] == {"x": 320, "y": 220, "width": 240, "height": 140}
    assert len(prompt["points"]) == 1


def test_the_header_names_the_served_model_and_an_empty_answer_says_why(annotator, photo):
    """The header names what the service serves (GET /sam3/model): random weights here, whose
    concept detector is untrained, which a concept search that finds nothing then says."""
    badge = annotator.page.get_by_test_id("served-model")
    expect(badge).to_have_text("Random weights · noise")
    expect(badge).to_have_attribute(
        "title", re.compile(r"^random:tiny: random weights.*untrained", re.S)
    )
    expect(badge).to_have_class(re.compile("warning"))
    nothing = {
        "prompt_results": [
            {
                "prompt_index": 0,
                "echo": {"prompt_index": 0, "type": "text", "text": "dog", "num_boxes": 0},
                "predictions": [],
            }
        ],
        "time": 0.01,
    }
    annotator.page.route(
        "**/sam3/concept_segment",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(nothing)
        ),
    )
    annotator.open(photo)
    annotator.page.get_by_test_id("concept-input").fill("dog")
    annotator.page.get_by_test_id("concept-input").press("Enter")
    annotator.expect_status(
        r"concept_segment · .*no “dog” found \(the served model's concept detector is untrained\)$"
    )


def test_api_key_mode(browser, served, photo):
    """Last: it redeploys the app with API keys. The page loads without a key, asks for one,
    sends it as a Bearer token and keeps it in the tab's session storage."""
    deploy_config(app_config(1, args={"engine": {**TINY_ENGINE, "api_keys": KEY}}))
    wait_for(partial(running, APP_NAME, 1), 300, "the app with API keys")
    embed = partial(served.post, "/sam3/embed_image", {"image": image_body(random_image(1))})
    wait_for(lambda: embed().status_code == 401, 120, "the ingress to need a key")
    wait_for(
        lambda: embed(headers={"Authorization": f"Bearer {KEY}"}).status_code == 200,
        120,
        "the ingress to take the key",
    )

    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    annotator = Annotator(page, served.url)
    response = page.goto(served.url + "/?decode=server")
    assert response.status == 200
    page.get_by_test_id("image-input").set_input_files(photo)
    annotator.expect_status(r"embed_image: 401 unauthorized")
    page.locator("#api-key").fill(KEY)
    page.locator("#api-key").press("Tab")  # the page embeds the waiting image with the key
    annotator.expect_status(r"embed_image · \d+ ms .*embedding miss")
    cx, cy = annotator.centre()
    page.mouse.click(cx, cy)
    annotator.wait_objects(1)
    assert annotator.last("visual_segment")["authorization"] == f"Bearer {KEY}"
    assert annotator.last("visual_segment")["status"] == 200
    page.reload()
    assert page.locator("#api-key").input_value() == KEY
    other_session = browser.new_context()
    other_tab = other_session.new_page()
    other_tab.goto(served.url + "/")
    assert other_tab.locator("#api-key").input_value() == ""
    other_session.close()
    context.close()
    assert not annotator.errors
