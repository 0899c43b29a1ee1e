"""The demo model (SAM3_CHECKPOINT=demo:shapes, trained on synthetic shapes, not SAM3) through
the real stack over HTTP: masks that follow the shapes clicked, boxed and refined on held-out
scenes, and after a scale event, and shapes tracked through a held-out clip from one click
each, where random weights fail the same thresholds (tests/unit/test_demo_weights.py,
tests/unit/test_video_demo_checkpoint.py)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image
from pycocotools import mask as coco_mask

from bench.harness import LocalCluster
from bench.samples import image_body
from deployments.ring import Ring, ring_key
from sam3_core.demo.evaluate import corrective_click, iou
from sam3_core.demo.scenes import Scene, held_out_clips, held_out_scenes
from tests.integration.serving import deploy

pytestmark = pytest.mark.ray

DEMO_ENGINE = {"checkpoint": "demo:shapes", "device": "cpu", "concepts": False}
# On these 8 held-out scenes the shipped model measures 0.891 (centre clicks) and 0.898
# (boxes); random weights ~0.03 (bench/demo.py).
MIN_CLICK_MIOU = 0.83
MIN_BOX_MIOU = 0.84


@pytest.fixture(scope="module")
def demo_service(service: LocalCluster) -> LocalCluster:
    deploy(service, replicas=1, args={"engine": DEMO_ENGINE})
    return service


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return held_out_scenes(8)


def png(scene: Scene) -> bytes:
    return png_of(scene.image)


def png_of(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def point(x: float, y: float, positive: bool = True) -> dict:
    return {"x": x, "y": y, "positive": positive}


def segment(service: LocalCluster, scene_id: str, scene: Scene, prompts: list[dict], **options):
    body = {
        "image": image_body(png(scene)),
        "image_id": scene_id,
        "prompts": prompts,
        "format": "rle",
        **options,
    }
    response = service.post("/sam3/visual_segment", body)
    assert response.status_code == 200, response.text[:300]
    return [coco_mask.decode(p["masks"]).astype(bool) for p in response.json()["predictions"]]


def test_centre_clicks_and_boxes_give_the_shapes(demo_service, scenes):
    clicks, boxes = [], []
    for n, scene in enumerate(scenes):
        centres = [scene.centre_click(i) for i in range(len(scene.kinds))]
        masks = segment(
            demo_service, f"demo-{n}", scene, [{"points": [point(*c)]} for c in centres]
        )
        clicks += [iou(m, t) for m, t in zip(masks, scene.masks, strict=True)]
        box_prompts = [
            {"box": {"x": (x0 + x1) / 2, "y": (y0 + y1) / 2, "width": x1 - x0, "height": y1 - y0}}
            for x0, y0, x1, y1 in scene.boxes.tolist()
        ]
        masks = segment(demo_service, f"demo-{n}", scene, box_prompts)
        boxes += [iou(m, t) for m, t in zip(masks, scene.masks, strict=True)]
    assert np.mean(clicks) > MIN_CLICK_MIOU, clicks
    assert np.mean(boxes) > MIN_BOX_MIOU, boxes


def test_a_corrective_click_seeded_by_the_cached_logits_improves_the_mask(demo_service):
    first, refined = [], []
    for n, scene in enumerate(held_out_scenes(16)):
        for i in range(len(scene.kinds)):
            click = point(*scene.centre_click(i))
            (mask,) = segment(
                demo_service, f"refine-{n}", scene, [{"points": [click]}], save_logits_to_cache=True
            )
            x, y, label = corrective_click(mask, scene.masks[i])
            (better,) = segment(
                demo_service,
                f"refine-{n}",
                scene,
                [{"points": [click, point(x, y, bool(label))]}],
                load_logits_from_cache=True,
                multimask_output=False,
            )
            first.append(iou(mask, scene.masks[i]))
            refined.append(iou(better, scene.masks[i]))
    # Measured: 0.871 -> 0.888 (the first clicks are good: most of the gain is on the worst).
    # One mask asked for, this checkpoint gains less than the one shipped before (on the 146
    # shapes of bench/demo.py, +0.005 against +0.013), and its gain on 8 scenes alone (+0.002)
    # is within what one shape moves, hence 16.
    assert np.mean(refined) > np.mean(first) + 0.005, (np.mean(first), np.mean(refined))


def test_a_negative_click_removes_a_neighbour(demo_service, scenes):
    """Clicks on two shapes give both; then, refining with the cached logits (both shapes),
    the second click made negative takes that shape out and keeps the other."""
    kept, removed, both = [], [], []
    for n, scene in enumerate(scenes):
        a, b = 0, 1
        pa, pb = scene.centre_click(a), scene.centre_click(b)
        (union,) = segment(
            demo_service,
            f"neg-{n}",
            scene,
            [{"points": [point(*pa), point(*pb)]}],
            save_logits_to_cache=True,
        )
        (after,) = segment(
            demo_service,
            f"neg-{n}",
            scene,
            [{"points": [point(*pa), point(*pb, positive=False)]}],
            load_logits_from_cache=True,
            multimask_output=False,
        )
        both.append(covered(union, scene.masks[b]))
        removed.append(covered(after, scene.masks[b]))
        kept.append(covered(after, scene.masks[a]))
    # Measured: the two clicks cover 0.93 of the neighbour, the negative click leaves 0.07
    # of it (it empties it in 6 scenes of 8) and keeps 0.93 of the first shape.
    assert np.mean(both) > 0.75, both
    assert np.mean(removed) < np.mean(both) - 0.5, (both, removed)
    assert np.mean(kept) > 0.85, kept


def covered(mask: np.ndarray, shape: np.ndarray) -> float:
    return float((mask & shape).sum() / shape.sum())


def test_the_same_masks_on_the_shapes_after_a_scale_out(demo_service, scenes):
    """Centre clicks by id on the held-out scenes, before and after a second replica joins
    (images handed to their new owners): the same masks, still on the shapes clicked, and
    handed off exactly where the ring moved them."""
    prompts = {
        n: [{"points": [point(*scene.centre_click(i))]} for i in range(len(scene.kinds))]
        for n, scene in enumerate(scenes)
    }
    before = {n: segment(demo_service, f"scale-{n}", s, prompts[n]) for n, s in enumerate(scenes)}
    (first,) = deploy(demo_service, replicas=1, args={"engine": DEMO_ENGINE})
    for _ in range(5):  # a new replica's id is random: a ring may give it none of 8 scenes
        ring = Ring(deploy(demo_service, replicas=2, args={"engine": DEMO_ENGINE}))
        expected = {n for n in prompts if ring.owner(ring_key(("", f"scale-{n}"))) != first}
        if expected:
            break
        (first,) = deploy(demo_service, replicas=1, args={"engine": DEMO_ENGINE})
        for n in prompts:  # a picture's first use after a hand-off says "handoff": used up
            body = {"image_id": f"scale-{n}", "prompts": prompts[n], "format": "rle"}
            assert demo_service.post("/sam3/visual_segment", body).status_code == 200
    moved = set()
    for n, scene in enumerate(scenes):
        body = {"image_id": f"scale-{n}", "prompts": prompts[n], "format": "rle"}
        response = demo_service.post("/sam3/visual_segment", body)
        assert response.status_code == 200, response.text[:300]
        if response.headers["x-sam3-embedding-cache"] == "handoff":
            moved.add(n)
        after = [coco_mask.decode(p["masks"]).astype(bool) for p in response.json()["predictions"]]
        assert all(np.array_equal(a, b) for a, b in zip(after, before[n], strict=True))
        ious = [iou(m, t) for m, t in zip(after, scene.masks, strict=True)]
        assert np.mean(ious) > 0.5, ious
    assert moved == expected, "the scenes the ring gave the second replica, and only those"


# On this held-out clip (30 frames, 2 shapes) the shipped model's tracks measure J = 0.890
# over frames 1-29 (sam3_core/demo/shapes.json: 0.862 on 32 clips); random weights ~0.01.
MIN_TRACK_J = 0.75
CLIP_FRAMES = 30


def propagate(service: LocalCluster, body: dict) -> list[dict]:
    with requests.post(
        service.url + "/sam3/video/propagate_in_video", json=body, stream=True, timeout=300
    ) as stream:
        assert stream.status_code == 200, stream.text
        return [json.loads(line) for line in stream.iter_lines() if line]


def test_shapes_clicked_on_the_first_frame_are_tracked_through_a_held_out_clip(demo_service):
    """A video session on the demo model: each shape of a held-out clip of moving shapes
    clicked once on frame 0 (after the first pass that sam3 needs before points), then
    propagated forward; the masks follow the shapes (J, the mean IoU per shape and frame)."""
    deploy(demo_service, replicas=1, args={"engine": DEMO_ENGINE})
    (clip,) = held_out_clips(1, CLIP_FRAMES)
    frames = [
        {"type": "base64", "value": base64.b64encode(png_of(frame)).decode()}
        for frame in clip.frames
    ]
    session = {"session_id": "demo-clip"}
    started = demo_service.post("/sam3/video/start_session", {**session, "frames": frames})
    assert started.status_code == 200, started.text[:300]
    first_pass = {**session, "propagation_direction": "forward", "start_frame_index": 0}
    assert len(propagate(demo_service, first_pass)) == CLIP_FRAMES
    height, width = clip.frames.shape[1:3]
    for index in range(len(clip.kinds)):
        x, y = clip.first_click(index)
        body = {"frame_index": 0, "points": [[x / width, y / height]], "point_labels": [1]}
        answer = demo_service.post(
            "/sam3/video/add_prompt", {**session, **body, "obj_id": index + 1}
        )
        assert answer.status_code == 200, answer.text[:300]
    lines = propagate(demo_service, {**session, "propagation_direction": "forward"})
    assert [line["frame_index"] for line in lines] == list(range(CLIP_FRAMES))
    per_frame = []
    for line in lines[1:]:
        shown = {o["obj_id"]: coco_mask.decode(o["mask"]).astype(bool) for o in line["outputs"]}
        truths = clip.masks[:, line["frame_index"]]
        per_frame.append([iou(shown.get(i + 1, np.zeros_like(t)), t) for i, t in enumerate(truths)])
    assert np.mean(per_frame) > MIN_TRACK_J, np.mean(per_frame, axis=1).round(2).tolist()
    demo_service.post("/sam3/video/close_session", session)
