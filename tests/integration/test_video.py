"""Video sessions on the session's Ray cluster, over HTTP: sessions spread over the segmenter
replicas and every request of a session is answered by the replica that holds it; sessions
move with scale events (3 replicas to 2 and back) and answer as if they never moved; a client
that hangs up mid-propagation stops it.

Tiny random-weights video model (its text prompts detect nothing; points make tracks)."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from pycocotools.mask import area

from bench.harness import LocalCluster, wait_for
from bench.samples import encode_image, random_pixels
from deployments.ring import Ring
from deployments.video_operations import session_ring_key
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
    # The first line, not the first 512 bytes; the iterator is kept: collected, it would close
    # the stream (a hang-up before the test means one).
    lines = stream.iter_lines(chunk_size=1)
    first = next(lines)
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


def propagate(service: LocalCluster, session_id: str, **args: object) -> tuple[str, list[dict]]:
    with requests.post(
        service.url + "/sam3/video/propagate_in_video",
        json={"session_id": session_id, **args},
        stream=True,
        timeout=300,
    ) as stream:
        assert stream.status_code == 200, stream.text
        return stream.headers["x-sam3-replica"], [
            json.loads(line) for line in stream.iter_lines() if line
        ]


def steps(service: LocalCluster, session_id: str, requests_: list[tuple[str, dict]]) -> tuple:
    """Each request on the session in turn; returns the replicas that answered and the
    answers (frames and their objects' masks, scores, ids)."""
    replicas, answers = set(), []
    for route, body in requests_:
        if route == "propagate_in_video":
            replica, lines = propagate(service, session_id, **body)
            answers.append(lines)
        else:
            answer = service.post(f"/sam3/video/{route}", {"session_id": session_id, **body})
            assert answer.status_code == 200, answer.text
            replica = answer.headers["x-sam3-replica"]
            answers.append(answer.json())
        replicas.add(replica)
    assert len(replicas) == 1, f"{session_id} answered by {replicas}"
    return replicas.pop(), answers


def points(frame_index: int, obj_id: int, x: float, y: float) -> tuple[str, dict]:
    body = {"frame_index": frame_index, "points": [[x, y]], "point_labels": [1], "obj_id": obj_id}
    return ("add_prompt", body)


def ring_key(session_id: str) -> str:
    return session_ring_key(None, session_id)


def spread_sessions(replicas: set[str], per_replica: int) -> list[str]:
    """Session ids of which the ring gives each replica `per_replica`: whichever a scale-in
    removes held some."""
    ring, taken = Ring(replicas), {replica: [] for replica in replicas}
    names = (f"moves-{number}" for number in range(10_000))
    while min(len(held) for held in taken.values()) < per_replica:
        name = next(names)
        held = taken[ring.owner(ring_key(name))]
        if len(held) < per_replica:
            held.append(name)
    return sorted(session for held in taken.values() for session in held)


def test_sessions_move_with_scale_events_and_answer_as_if_they_never_moved(
    service: LocalCluster,
):
    """Identical sessions on 3 replicas, scaled in to 2 and out to 3 again between requests:
    those that moved answer as those that did not (same masks, scores and ids), each
    request on one replica, the moved ones on their new owner."""
    replicas = deploy(service, replicas=3)
    ids = spread_sessions(replicas, per_replica=2)
    owner = {i: start(service, i, count=3).headers["x-sam3-replica"] for i in ids}
    assert owner == {i: Ring(replicas).owner(ring_key(i)) for i in ids}
    before = [
        ("add_prompt", {"frame_index": 0, "text": "cat"}),
        ("propagate_in_video", {}),
        points(1, 1, 0.4, 0.6),
        ("propagate_in_video", {"propagation_direction": "forward", "start_frame_index": 1}),
    ]
    first = {i: steps(service, i, before) for i in ids}
    assert all(first[i][0] == owner[i] for i in ids)
    tracked = [out for line in first[ids[0]][1][3] for out in line["outputs"]]
    assert any(area(dict(out["mask"], counts=out["mask"]["counts"].encode())) for out in tracked)

    def same_answers(answers: dict[str, tuple]) -> None:
        reference = answers[ids[0]][1]
        for session_id in ids:
            assert answers[session_id][1] == reference, f"{session_id} answered otherwise"

    same_answers(first)
    survivors = deploy(service, replicas=2)
    moved = [i for i in ids if owner[i] not in survivors]
    assert moved, "the removed replica held some sessions"
    after_in = {i: steps(service, i, [points(2, 1, 0.3, 0.3), ("propagate_in_video", {})])
                for i in ids}  # fmt: skip
    same_answers(after_in)
    assert all(after_in[i][0] in survivors for i in ids)

    out_again = deploy(service, replicas=3)
    for _ in range(4):  # a new replica's id is random: a ring may give it none of 6 sessions
        if any(Ring(out_again).owner(ring_key(i)) in out_again - survivors for i in ids):
            break
        survivors = deploy(service, replicas=2)
        out_again = deploy(service, replicas=3)
    later = [
        points(0, 2, 0.7, 0.2),
        ("remove_object", {"obj_id": 1}),
        ("propagate_in_video", {"propagation_direction": "backward", "start_frame_index": 2}),
    ]
    after_out = {i: steps(service, i, later) for i in ids}
    same_answers(after_out)
    assert all(after_out[i][0] == Ring(out_again).owner(ring_key(i)) for i in ids)
    assert {after_out[i][0] for i in ids} & (out_again - survivors), "the added one took some"
    for session_id in ids:
        assert service.post("/sam3/video/close_session", {"session_id": session_id}).ok
