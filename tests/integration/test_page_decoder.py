"""The page decoding clicks in Chromium (onnxruntime-web in a Web Worker), against the API
served in-process (uvicorn on 127.0.0.1, the tiny model on random weights with sam3's hole
filling on): no request to the service per click, the same masks as onnxruntime in Python
for the same inputs, and the service's decoder where the browser cannot decode."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests
import torch
import uvicorn
from PIL import Image
from playwright.sync_api import Browser, Page, expect
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from bench.browser import chromium, chromium_path
from bench.samples import random_pixels
from deployments.api import create_api
from deployments.owners import LocalOwners
from deployments.settings import IngressSettings
from sam3_core import onnx_decoder
from sam3_core.engine import Segmenter
from sam3_core.protocol.embedding import read_embedding
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

pytestmark = pytest.mark.browser

HEIGHT, WIDTH = 240, 320


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        message = "no chromium on the PATH: `apt-get install chromium` (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests; {message}")
        pytest.skip(message)
    with chromium(path) as browser:
        yield browser


@pytest.fixture(scope="module")
def engine() -> Segmenter:
    settings = EngineSettings(
        random_weights="tiny", max_hole_area=256, concepts=False, device="cpu"
    )
    return Segmenter(load_model(settings), settings)


@pytest.fixture(scope="module")
def url(engine) -> Iterator[str]:
    """The API and the page, served by uvicorn from this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_api(LocalOwners(engine), IngressSettings())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for seed in range(3):
        path = folder / f"image-{seed}.png"
        Image.fromarray(random_pixels(20 + seed, HEIGHT, WIDTH)).save(path)
        paths.append(path)
    return paths


class Session:
    """A tab on the page, with the API requests it sent."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", self._record)

    def _record(self, request) -> None:
        if "/sam3/" in request.url:
            self.requests.append(request.url.rsplit("/", 1)[-1])

    def centre(self) -> tuple[float, float]:
        box = self.page.get_by_test_id("canvas").bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def wait_saved(self, images: int) -> None:
        """Until IndexedDB holds objects for `images` images (the page saves them shortly
        after each change)."""
        script = """() => new Promise((resolve) => {
            const open = indexedDB.open("sam3-serve");
            open.onsuccess = () => {
                const all = open.result.transaction("annotations").objectStore("annotations")
                    .getAll();
                all.onsuccess = () =>
                    resolve(all.result.filter((a) => a?.objects?.length).length);
            };
            open.onerror = () => resolve(0);
        })"""
        deadline = time.monotonic() + 30
        while self.page.evaluate(script) < images:
            assert time.monotonic() < deadline, "the page did not save its objects"
            self.page.wait_for_timeout(100)

    def wait_objects(self, count: int) -> None:
        objects = self.page.get_by_test_id("object-list").get_by_test_id("object")
        expect(objects).to_have_count(count)
        expect(self.page.locator("[data-testid=object].pending")).to_have_count(0)


@pytest.fixture
def tab(browser: Browser, url: str) -> Iterator[Session]:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    session = Session(context.new_page())
    yield session
    context.close()
    assert not session.errors, session.errors


def test_clicks_decode_in_the_browser_with_no_request_per_click(tab, url, images):
    page = tab.page
    page.goto(url + "/")
    assert page.evaluate("crossOriginIsolated"), "COOP/COEP: WASM threads need isolation"
    page.get_by_test_id("image-input").set_input_files(images[0])
    # The first load: the decoder exported by the service, onnxruntime's WASM compiled.
    expect(page.get_by_test_id("status")).to_have_text(
        re.compile(r"embedding · \d+ ms"), timeout=120_000
    )
    before = list(tab.requests)
    assert before.count("decoder.onnx") == 1 and before.count("embedding") == 1
    cx, cy = tab.centre()
    page.mouse.click(cx, cy)
    tab.wait_objects(1)
    expect(page.get_by_test_id("decode-path")).to_have_text("browser")
    expect(page.get_by_test_id("status")).to_have_text(re.compile(r"decoded in the browser"))
    page.mouse.click(cx + 40, cy + 20, button="right")  # a refinement, seeded locally
    tab.wait_objects(1)
    page.keyboard.press("Escape")
    page.mouse.click(cx - 60, cy - 30)
    tab.wait_objects(2)
    assert tab.requests == before, "a click sent a request"
    assert "visual_segment" not in tab.requests and "embed_image" not in tab.requests


def test_the_service_decodes_where_the_browser_cannot(tab, url, images):
    page = tab.page
    page.route("**/sam3/decoder.onnx", lambda route: route.fulfill(status=503, body="{}"))
    page.goto(url + "/")
    page.get_by_test_id("image-input").set_input_files(images[0])
    expect(page.get_by_test_id("status")).to_have_text(
        re.compile(r"embed_image · \d+ ms"), timeout=60_000
    )
    cx, cy = tab.centre()
    page.mouse.click(cx, cy)
    tab.wait_objects(1)
    expect(page.get_by_test_id("decode-path")).to_have_text("server")
    expect(page.get_by_test_id("status")).to_have_text(
        re.compile(r"decoded by the service: decoder.onnx: 503")
    )
    assert "visual_segment" in tab.requests and "embedding" not in tab.requests


def test_browser_masks_equal_onnxruntime_in_python(tab, url, images, engine):
    """The worker's masks against onnxruntime's in Python and sam3's post-processing, for
    the same embedding and prompts: equal but for pixels whose logit is within 1e-3 of the
    threshold (WASM's and the CPU's float rounding may differ there)."""
    page = tab.page
    page.goto(url + "/")
    prompts = [
        {"points": [{"x": 160.0, "y": 120.0, "positive": True}], "box": None, "multimask": True},
        {
            "points": [{"x": 100.5, "y": 80.0, "positive": True}],
            "box": {"x0": 20.0, "y0": 30.0, "x1": 250.0, "y1": 200.0},
            "multimask": False,
        },
    ]
    data_url = "data:image/png;base64," + base64.b64encode(images[1].read_bytes()).decode()
    answers = page.evaluate(
        """async ([dataUrl, prompts]) => {
          const { LocalDecoder } = await import("./page/local-decoder.js");
          const api = { base: document.baseURI, key: "", onCall: () => {} };
          const local = new LocalDecoder(api);
          const image = { id: null, dataUrl };
          const id = await local.load(image);
          const out = [];
          for (const p of prompts) {
            out.push(await local.decode(id, { points: p.points, box: p.box }, p.multimask));
          }
          return { id, out };
        }""",
        [data_url, prompts],
    )
    embedding = requests.post(
        url + "/sam3/embedding", json={"image_id": answers["id"]}, timeout=60
    ).content
    header, arrays = read_embedding(embedding)
    onnx = requests.get(url + "/sam3/decoder.onnx", timeout=60).content
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    model = engine.model
    for prompt, answer in zip(prompts, answers["out"], strict=True):
        coords = [[p["x"], p["y"]] for p in prompt["points"]]
        labels = [1.0 if p["positive"] else 0.0 for p in prompt["points"]]
        if prompt["box"]:
            box = prompt["box"]
            coords = [[box["x0"], box["y0"]], [box["x1"], box["y1"]], *coords]
            labels = [2.0, 3.0, *labels]
        feed = onnx_decoder.decoder_inputs(arrays, coords, labels, orig_hw=(HEIGHT, WIDTH))
        low_res, scores = session.run(None, feed)
        chosen, score = onnx_decoder.select_proposal(
            low_res, scores, prompt["multimask"], header["decoder"]
        )
        assert answer["score"] == pytest.approx(score, abs=1e-4)
        logits = model.predictor._transforms.postprocess_masks(
            torch.from_numpy(chosen.copy())[None, None], (HEIGHT, WIDTH)
        )[0, 0].numpy()
        expected = logits > 0
        browser_mask = coco_mask.decode(answer["rle"]).astype(bool)
        differ = browser_mask != expected
        assert not (differ & (np.abs(logits) > 1e-3)).any(), int(differ.sum())
        assert json.dumps(answer["rle"]["size"]) == json.dumps([HEIGHT, WIDTH])


def test_a_dataset_next_previous_prefetch_and_reload(tab, url, images):
    page = tab.page
    page.goto(url + "/")
    page.get_by_test_id("image-input").set_input_files(images)
    index = page.get_by_test_id("image-index")
    expect(index).to_have_text("1 / 3")
    # The first image's embedding, then the next one's, fetched before it is shown.
    deadline = time.monotonic() + 120
    while tab.requests.count("embedding") < 2:
        assert time.monotonic() < deadline, tab.requests
        page.wait_for_timeout(100)
    cx, cy = tab.centre()
    page.mouse.click(cx, cy)
    tab.wait_objects(1)
    page.get_by_test_id("next-image").click()
    expect(index).to_have_text("2 / 3")
    tab.wait_objects(0)
    page.mouse.click(cx + 30, cy)
    tab.wait_objects(1)
    # The next image's first click: its embedding was in the browser already.
    expect(page.get_by_test_id("status")).to_have_text(re.compile(r"embedding in the browser"))
    expect(page.get_by_test_id("decode-path")).to_have_text("browser")
    page.keyboard.press("PageUp")
    expect(index).to_have_text("1 / 3")
    tab.wait_objects(1)
    page.keyboard.press("PageDown")
    page.keyboard.press("PageDown")
    expect(index).to_have_text("3 / 3")
    assert tab.requests.count("embedding") == 3, tab.requests
    assert "visual_segment" not in tab.requests

    # A reload mid-work: every image and every object back, from IndexedDB.
    tab.wait_saved(2)  # the autosave (debounced) of both annotated images
    page.reload()
    expect(index).to_have_text("3 / 3", timeout=30_000)
    page.get_by_test_id("prev-image").click()
    expect(index).to_have_text("2 / 3")
    tab.wait_objects(1)
    page.get_by_test_id("prev-image").click()
    tab.wait_objects(1)


def test_a_dataset_coco_file_and_continuing_from_it(tab, url, images, tmp_path):
    page = tab.page
    page.goto(url + "/")
    page.get_by_test_id("image-input").set_input_files(images)
    index = page.get_by_test_id("image-index")
    expect(index).to_have_text("1 / 3")
    # Embedded (the progress overlay, hidden before the embed starts too, would pass at once).
    expect(page.get_by_test_id("status")).to_have_text(
        re.compile(r"embedding · \d+ ms"), timeout=120_000
    )
    expect(page.locator("#progress")).to_be_hidden(timeout=120_000)
    cx, cy = tab.centre()
    page.mouse.click(cx, cy)
    tab.wait_objects(1)
    page.keyboard.press("Escape")
    page.mouse.click(cx - 50, cy + 20)
    tab.wait_objects(2)
    page.get_by_test_id("next-image").click()
    expect(index).to_have_text("2 / 3")
    page.mouse.click(cx + 20, cy - 20)
    tab.wait_objects(1)
    with page.expect_download() as download:
        page.get_by_test_id("export-coco").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "dataset.coco.json"

    coco = COCO(str(path))
    names = {image["id"]: image["file_name"] for image in coco.dataset["images"]}
    per_image = {names[i]: len(coco.getAnnIds(imgIds=[i])) for i in names}
    assert per_image == {"image-0.png": 2, "image-1.png": 1}
    for annotation in coco.dataset["annotations"]:
        mask = coco.annToMask(annotation)
        assert mask.shape == (HEIGHT, WIDTH) and mask.sum() == annotation["area"]

    # Cleared, then the images and the COCO file opened again: the work continues.
    page.get_by_test_id("clear-dataset").click()
    expect(index).to_have_text("0 / 0")
    page.get_by_test_id("image-input").set_input_files([*images, path])
    expect(index).to_have_text("1 / 3")
    listed = page.get_by_test_id("dataset-list").locator("li")
    expect(listed).to_have_text(
        ["image-0.png · 2 objects", "image-1.png · 1 object", "image-2.png · to do"]
    )
    tab.wait_objects(2)
    page.get_by_test_id("next-image").click()
    tab.wait_objects(1)


def test_the_benchmark_reads_where_onnxruntime_web_spends_a_decode(tab, url):
    """`bench.browser_decode`'s profile: onnxruntime-web's profiler events, read from the
    console, add up to the served graph's operators, warm-up runs left out."""
    from bench.browser_decode import PROFILE_RUNS, PROFILE_SKIPPED, wasm_profile

    tab.page.goto(url + "/")
    profile = wasm_profile(tab.page)
    assert profile["runs"] == PROFILE_RUNS - PROFILE_SKIPPED
    assert profile["kernels_ms_per_run"] > 0
    shares = profile["op_share"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert shares.keys() & {"MatMul", "FusedMatMul", "Gemm"}, shares
    assert shares.keys() & {"ConvTranspose"}, "the tiny graph keeps sam3's upscaling"
