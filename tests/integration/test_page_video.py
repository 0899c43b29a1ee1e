"""The page's video mode in a real Chromium against the real service (the session's Ray
cluster, the tiny random-weights model: its masks are noise and its tracker untrained, so
nothing here is about tracking quality, only about what the page asks and keeps): a WebM of
moving shapes opened, a click on frame 0, a propagation whose progress reaches every frame as
its lines stream in, a scrub, a correction on another frame and a second propagation,
playback, both exports read back (pycocotools for COCO; YouTube-VIS's structure), and the
session closed on leaving."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Route, expect
from playwright.sync_api import Error as PlaywrightError
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from bench.harness import LocalCluster
from sam3_core.demo.scenes import COLOURS

# test_page.py's deployment: after it (the suite's order) deploying it again changes nothing.
from tests.integration.test_page import Annotator, browser, served  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.ray, pytest.mark.browser]

FRAMES, WIDTH, HEIGHT, FPS = 4, 160, 120, 8
# A model call on 2 busy cores (a session's first click builds sam3's tracker state): ms.
MODEL_WAIT = 120_000
STEP = 8  # pixels the circle moves right per frame


def circle_at(frame: int) -> tuple[int, int]:
    return 40 + STEP * frame, 60


def moving_shapes() -> list[np.ndarray]:
    """A red circle moving right past a still blue square, on grey: (H, W, 3) RGB frames."""
    frames = []
    for index in range(FRAMES):
        image = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)
        cv2.circle(image, circle_at(index), 22, COLOURS["red"], -1)
        cv2.rectangle(image, (110, 20), (140, 50), COLOURS["blue"], -1)
        frames.append(image)
    return frames


def webm(frames: list[np.ndarray]) -> bytes:
    """VP8 in WebM, which both the service (PyAV) and Chromium decode."""
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "4", "b:v": "2M"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "shapes.webm"
    path.write_bytes(webm(moving_shapes()))
    return path


@pytest.fixture
def annotator(browser: Browser, served: LocalCluster) -> Iterator[Annotator]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page = context.new_page()
    annotator = Annotator(page, served.url)
    page.goto(served.url + "/")
    yield annotator
    context.close()
    assert not annotator.errors, annotator.errors


def frame_point(annotator: Annotator, x: float, y: float) -> tuple[float, float]:
    """Where frame pixel (x, y) is on the screen: the frame is fitted, centred, in the canvas
    with a 12 px margin (`View.fit`)."""
    box = annotator.page.get_by_test_id("canvas").bounding_box()
    scale = min((box["width"] - 24) / WIDTH, (box["height"] - 24) / HEIGHT)
    cx, cy = annotator.centre()
    return cx + (x - WIDTH / 2) * scale, cy + (y - HEIGHT / 2) * scale


def propagated(annotator: Annotator, count: int) -> dict:
    """Wait for the `count`th propagation to have streamed every frame; its request body."""
    page = annotator.page
    expect(page.get_by_test_id("stop-propagation")).to_be_hidden(timeout=MODEL_WAIT)
    expect(page.get_by_test_id("video-progress-text")).to_have_text(f"{FRAMES} / {FRAMES} frames")
    calls = [call for call in annotator.calls if call["route"] == "propagate_in_video"]
    assert len(calls) == count and all(call["status"] == 200 for call in calls)
    assert page.get_by_test_id("video-progress").evaluate("bar => bar.value") == 1
    return calls[-1]["body"]


def test_open_click_propagate_correct_play_export_and_close(annotator, served, clip, tmp_path):  # noqa: F811
    page = annotator.page
    page.get_by_test_id("video-input").set_input_files(clip)
    # sam3 takes clicks on frames it has been through: the page's first pass, from frame 0.
    expect(page.get_by_test_id("status")).to_have_text(re.compile("ready"), timeout=MODEL_WAIT)
    first = propagated(annotator, 1)
    session_id = first["session_id"]
    assert first == {
        "session_id": session_id,
        "format": "rle",
        "propagation_direction": "both",
        "start_frame_index": 0,
    }
    assert page.get_by_test_id("video-slider").get_attribute("max") == str(FRAMES - 1)

    # A click on the circle on frame 0: a new object, its point normalised to the frame.
    page.get_by_test_id("video-slider").fill("0")
    expect(page.get_by_test_id("video-frame")).to_have_text(f"1 / {FRAMES}")
    page.mouse.click(*frame_point(annotator, *circle_at(0)))
    expect(page.get_by_test_id("video-object")).to_have_count(1, timeout=MODEL_WAIT)
    expect(page.get_by_test_id("propagate")).to_be_enabled(timeout=MODEL_WAIT)
    click = annotator.last("add_prompt")["body"]
    (point,) = click.pop("points")
    assert click == {
        "session_id": session_id,
        "format": "rle",
        "frame_index": 0,
        "obj_id": 1,
        "point_labels": [1],
    }
    assert point == [pytest.approx(40 / WIDTH, abs=0.01), pytest.approx(0.5, abs=0.01)]

    page.get_by_test_id("propagate").click()
    body = propagated(annotator, 2)
    assert body == {"session_id": session_id, "format": "rle", "propagation_direction": "both"}

    # Scrub to frame 2, correct there with a negative click, propagate again.
    page.get_by_test_id("video-slider").fill("2")
    expect(page.get_by_test_id("video-frame")).to_have_text(f"3 / {FRAMES}")
    page.mouse.click(*frame_point(annotator, *circle_at(2)), button="right")
    expect(page.get_by_test_id("propagate")).to_be_enabled(timeout=MODEL_WAIT)
    correction = annotator.last("add_prompt")["body"]
    assert (correction["frame_index"], correction["obj_id"]) == (2, 1)
    assert correction["point_labels"] == [0]
    page.get_by_test_id("propagate").click()
    propagated(annotator, 3)

    # Playback runs to the last frame.
    page.get_by_test_id("play").click()
    expect(page.get_by_test_id("video-frame")).to_have_text(f"{FRAMES} / {FRAMES}")

    ytvis = json.loads(annotator.download("export-ytvis", tmp_path).read_text())
    (video,) = ytvis["videos"]
    assert (video["width"], video["height"], video["length"]) == (WIDTH, HEIGHT, FRAMES)
    assert len(video["file_names"]) == FRAMES
    names = {category["id"]: category["name"] for category in ytvis["categories"]}
    tracks = {}
    for annotation in ytvis["annotations"]:
        assert annotation["video_id"] == 1 and annotation["category_id"] in names
        entries = zip(
            annotation["segmentations"], annotation["bboxes"], annotation["areas"], strict=True
        )
        assert len(annotation["segmentations"]) == FRAMES
        for segmentation, bbox, area in entries:
            if segmentation is None:
                assert bbox is None and area is None
                continue
            mask = coco_mask.decode(segmentation)
            assert mask.shape == (HEIGHT, WIDTH) and mask.sum() == area
            assert bbox == coco_mask.toBbox(segmentation).tolist()
        tracks[annotation["track_id"]] = annotation["segmentations"]
    assert 1 in tracks

    coco = COCO(str(annotator.download("export-video-coco", tmp_path)))
    assert sorted(image["frame_index"] for image in coco.imgs.values()) == list(range(FRAMES))
    present = sum(s is not None for segmentations in tracks.values() for s in segmentations)
    assert len(coco.anns) == present
    for annotation in coco.anns.values():
        frame = coco.imgs[annotation["image_id"]]["frame_index"]
        mask = coco.annToMask(annotation)
        assert mask.sum() == annotation["area"] > 0
        same = tracks[annotation["track_id"]][frame]
        assert np.array_equal(mask, coco_mask.decode(same))

    # Leaving the video closes its session on the service.
    with page.expect_response(re.compile(r"/sam3/video/close_session$")) as closing:
        page.get_by_test_id("close-video").click()
    assert closing.value.status == 200
    assert closing.value.request.post_data_json == {"session_id": session_id}
    expect(page.get_by_test_id("video-bar")).to_be_hidden()
    gone = served.post("/sam3/video/reset_session", {"session_id": session_id})
    assert gone.status_code == 404 and gone.json()["code"] == "session_not_found"


def test_stop_ends_a_propagation_under_way_and_the_next_one_runs(annotator, clip):
    """Stop while a propagation's stream has not begun (its request held back by the
    browser, so that the click cannot come too late): the page drops it, says so, and the
    next propagation runs to the end. (The service's side of a hang-up: `test_video.py`.)"""
    page = annotator.page
    page.get_by_test_id("video-input").set_input_files(clip)
    expect(page.get_by_test_id("status")).to_have_text(re.compile("ready"), timeout=MODEL_WAIT)
    propagated(annotator, 1)
    page.get_by_test_id("video-slider").fill("0")
    page.mouse.click(*frame_point(annotator, *circle_at(0)))
    expect(page.get_by_test_id("propagate")).to_be_enabled(timeout=MODEL_WAIT)

    held: list[Route] = []
    page.route(PROPAGATE, lambda route: held.append(route))
    page.get_by_test_id("propagate").click()
    expect(page.get_by_test_id("stop-propagation")).to_be_visible()
    page.get_by_test_id("stop-propagation").click()
    expect(page.get_by_test_id("stop-propagation")).to_be_hidden()
    expect(page.get_by_test_id("status")).to_have_text(re.compile("stopped after 0 frames"))
    expect(page.get_by_test_id("propagate")).to_be_enabled()
    assert len(held) == 1
    page.unroute(PROPAGATE)
    with contextlib.suppress(PlaywrightError):  # the page has dropped it already
        held[0].abort()

    page.get_by_test_id("propagate").click()
    assert propagated(annotator, 2)["propagation_direction"] == "both"


PROPAGATE = re.compile(r"/sam3/video/propagate_in_video$")
