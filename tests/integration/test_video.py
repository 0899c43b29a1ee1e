"""Video sessions on the session's Ray cluster, over HTTP: sessions spread over the segmenter
replicas and every request of a session is answered by the replica that started it; a client
that hangs up mid-propagation stops it.

Tiny random-weights video model (it detects nothing: the tracks are empty, the work is not)."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from bench.harness import LocalCluster, wait_for
from bench.samples import encode_image, random_pixels
from tests.integration.serving import deploy, settled_total

pytestmark = pytest.mark.ray

FRAMES_PROPAGATED = "ray_sam3_video_frames_propagated_total"


def frames(count: int, seed: int = 0) -> list[dict[str, str]]:
    pictures = [encode_image(random_pixels(seed + i, 24, 32)) for i in range(count)]
    return [{"type": "base64", "value": base64.b64encode(p).decode()} for p in pictures]


def start(service: LocalCluster, session_id: str, count: int = 2) -> requests.Response:
    body = {"frames": frames(count), "session_id": session_id}
    response = service.post("/sam3/video/start_session", body)
    assert response.status_code == 200, response.text
    return response


def test_every_request_of_a_session_reaches_the_replica_that_holds_it(service: LocalCluster):
    replicas = deploy(service, replicas=3)
    ids = [f"video-{i}" for i in range(8)]
    owner = {i: start(service, i).headers["x-sam3-replica"] for i in ids}
    assert set(owner.values()) <= replicas and len(set(owner.values())) >= 2

    first = ids[0]
    prompted = service.post(
        "/sam3/video/add_prompt", {"session_id": first, "frame_index": 0, "text": "cat"}
    )
    assert prompted.status_code == 200, prompted.text
    assert prompted.headers["x-sam3-replica"] == owner[first]
    with requests.post(
        service.url + "/sam3/video/propagate_in_video",
        json={"session_id": first},
        stream=True,
        timeout=300,
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["x-sam3-replica"] == owner[first]
        lines = [json.loads(line) for line in stream.iter_lines() if line]
    assert [line["frame_index"] for line in lines] == [0, 1]

    for session_id in ids:
        for route in ("reset_session", "close_session"):
            answer = service.post(f"/sam3/video/{route}", {"session_id": session_id})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-sam3-replica"] == owner[session_id]
        gone = service.post("/sam3/video/reset_session", {"session_id": session_id})
        assert gone.status_code == 404 and gone.json()["code"] == "session_not_found"
        assert gone.headers["x-sam3-replica"] == owner[session_id]


def test_a_client_that_hangs_up_stops_its_propagation(service: LocalCluster):
    deploy(service, replicas=2)
    count = 400
    start(service, "long-clip", count)
    prompt = {"session_id": "long-clip", "frame_index": 0, "text": "cat"}
    assert service.post("/sam3/video/add_prompt", prompt).status_code == 200
    before = settled_total(service, FRAMES_PROPAGATED)
    stream = requests.post(
        service.url + "/sam3/video/propagate_in_video",
        json={"session_id": "long-clip", "propagation_direction": "forward"},
        stream=True,
        timeout=300,
    )
    assert stream.status_code == 200
    first = next(stream.iter_lines(chunk_size=1))  # the first line, not the first 512 bytes
    assert json.loads(first)["frame_index"] == 0
    busy = service.post("/sam3/video/propagate_in_video", {"session_id": "long-clip"})
    assert busy.status_code == 409 and busy.json()["code"] == "session_busy"
    stream.close()  # hang up

    def free() -> bool:
        return service.post("/sam3/video/reset_session", {"session_id": "long-clip"}).ok

    wait_for(free, timeout=120, what="the propagation to stop")
    tracked = settled_total(service, FRAMES_PROPAGATED) - before
    assert 1 <= tracked < count, f"{tracked} frames tracked after the client hung up"
    service.post("/sam3/video/close_session", {"session_id": "long-clip"})
