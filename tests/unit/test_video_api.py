"""The video routes without Ray: FastAPI's test client, video sessions in-process behind it
(the tiny video model, random weights)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pycocotools import mask as coco_mask

from bench.video_reference import random_video_model
from deployments.api import create_api
from deployments.owners import LocalOwners
from deployments.settings import IngressSettings
from deployments.video_owners import LocalVideoOwners
from sam3_core.architecture import TINY
from sam3_core.settings import RequestLimits, VideoSettings
from sam3_core.video_sessions import VideoSessions
from tests.conftest import encode_image, random_pixels

FRAMES = [
    {"type": "base64", "value": base64.b64encode(encode_image(random_pixels(s, 48, 64))).decode()}
    for s in range(2)
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    sessions = VideoSessions(
        random_video_model(TINY),
        VideoSettings(video_max_sessions=3),
        RequestLimits(),
        torch.device("cpu"),
    )
    app = create_api(LocalOwners(None), IngressSettings(), video_owners=LocalVideoOwners(sessions))
    return TestClient(app, raise_server_exceptions=False)


def test_a_session_from_start_to_close(client: TestClient) -> None:
    started = client.post("/sam3/video/start_session", json={"frames": FRAMES, "session_id": "s1"})
    assert started.status_code == 200, started.text
    assert started.json() == {"session_id": "s1", "num_frames": 2, "width": 64, "height": 48}
    assert started.headers["x-sam3-replica"] == "local"

    prompted = client.post(
        "/sam3/video/add_prompt", json={"session_id": "s1", "frame_index": 0, "text": "cat"}
    )
    assert prompted.status_code == 200, prompted.text
    answer = prompted.json()
    assert answer["frame_index"] == 0 and answer["outputs"]
    for output in answer["outputs"]:
        mask = coco_mask.decode({**output["mask"], "counts": output["mask"]["counts"].encode()})
        assert mask.shape == (48, 64) and mask.any()
        assert 0 <= output["score"] <= 1 and len(output["box_xywh"]) == 4

    with client.stream(
        "POST",
        "/sam3/video/propagate_in_video",
        json={"session_id": "s1", "propagation_direction": "forward", "format": "polygon"},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "application/x-ndjson"
        assert stream.headers["x-sam3-replica"] == "local"
        lines = [json.loads(line) for line in stream.iter_lines() if line]
    assert [line["frame_index"] for line in lines] == [0, 1]
    assert all(isinstance(o["mask"], list) for line in lines for o in line["outputs"])

    obj_id = answer["outputs"][0]["obj_id"]
    for route, body in [
        ("remove_object", {"session_id": "s1", "obj_id": obj_id}),
        ("reset_session", {"session_id": "s1"}),
        ("close_session", {"session_id": "s1"}),
        ("close_session", {"session_id": "s1"}),  # idempotent
    ]:
        response = client.post(f"/sam3/video/{route}", json=body)
        assert response.status_code == 200 and response.json() == {"is_success": True}
        assert response.headers["x-sam3-replica"] == "local"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("add_prompt", {"session_id": "gone", "frame_index": 0, "text": "cat"}),
        ("propagate_in_video", {"session_id": "gone"}),
        ("remove_object", {"session_id": "gone", "obj_id": 1}),
        ("reset_session", {"session_id": "gone"}),
    ],
)
def test_an_unknown_session_is_404_session_not_found(client: TestClient, route, body) -> None:
    response = client.post(f"/sam3/video/{route}", json=body)
    assert response.status_code == 404
    assert response.json()["code"] == "session_not_found"


def test_bad_requests_are_4xx_naming_the_problem(client: TestClient) -> None:
    both = client.post("/sam3/video/start_session", json={"frames": FRAMES, "video": FRAMES[0]})
    assert both.status_code == 400 and "not both" in both.json()["message"]
    garbage = {"type": "base64", "value": base64.b64encode(b"not a video").decode()}
    not_a_video = client.post("/sam3/video/start_session", json={"video": garbage})
    assert not_a_video.status_code == 400 and "MP4/WebM" in not_a_video.json()["message"]
    bad_id = client.post("/sam3/video/start_session", json={"frames": FRAMES, "session_id": "a b"})
    assert bad_id.status_code == 400 and bad_id.json()["message"].startswith("session_id")
    client.post("/sam3/video/start_session", json={"frames": FRAMES, "session_id": "s2"})
    box = {"session_id": "s2", "frame_index": 0, "bounding_boxes": [[0.5, 0.5, 0.9, 0.1]]}
    assert client.post("/sam3/video/add_prompt", json=box).status_code == 400
    wrong = client.post("/sam3/video/propagate_in_video", json={"session_id": "s2", "x": 1,
                        "propagation_direction": "up"})  # fmt: skip
    assert wrong.status_code == 422
    client.post("/sam3/video/close_session", json={"session_id": "s2"})


def test_sessions_per_replica_are_refused_with_429_naming_the_limit(client: TestClient) -> None:
    ids = [f"full-{i}" for i in range(4)]
    answers = [
        client.post("/sam3/video/start_session", json={"frames": FRAMES, "session_id": i})
        for i in ids
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert "SAM3_VIDEO_MAX_SESSIONS=3" in answers[-1].json()["message"]
    for i in ids:
        client.post("/sam3/video/close_session", json={"session_id": i})
    assert np.all([client.post("/sam3/video/reset_session", json={"session_id": i}).status_code
                   == 404 for i in ids])  # fmt: skip
