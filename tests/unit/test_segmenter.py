"""The segmenter replica's methods without Ray: a client's error is answered as a value (Ray
Serve would log a raised one at ERROR with its traceback), and the ingress raises it again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from deployments import owners as owners_module
from deployments.operations import EMBED, SEGMENT
from deployments.owners import RayOwners
from deployments.segmenter import SegmenterReplica
from sam3_core import PromptSet, SegmentRequest
from sam3_core.calls import EmbedRequest
from sam3_core.errors import ImageNotCachedError, InvalidImageError
from tests.conftest import encode_image, random_pixels

CLICK = PromptSet.model_validate({"points": [{"x": 9, "y": 9, "positive": True}]})


class NoMetrics:
    def record_stats(self, stats: object) -> None: ...

    def record_timings(self, operation: str, timings: object) -> None: ...


class AlwaysOwner:
    """Hand-off stand-in: every image is this replica's (tests/unit/test_handoff.py covers
    the rest)."""

    @contextlib.asynccontextmanager
    async def serving(self, request: object, forwarded: bool) -> AsyncIterator[None]:
        yield None

    async def after(self, request: object, embedding_cache: str) -> None: ...

    def lost_borrowed_copy(self, request: object) -> bool:
        return False


@pytest.fixture
def replica(segmenter):
    """A replica around the tiny engine, built without Ray's replica context."""
    replica = SegmenterReplica.__new__(SegmenterReplica)
    replica.engine = segmenter
    replica.replica = "r"
    replica._pool = ThreadPoolExecutor(1)
    replica.metrics = NoMetrics()
    replica.handoff = AlwaysOwner()
    yield replica
    replica._pool.shutdown()


class Handle:
    """Ray Serve's handle, reduced to what `RayOwners` calls, in front of one replica."""

    def __init__(self, replica: SegmenterReplica) -> None:
        self.replica = replica

    def options(self, session_id: str) -> Handle:
        return self

    def __getattr__(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(remote=getattr(self.replica, name))


@pytest.mark.parametrize(
    ("operation", "request_", "error"),
    [
        (SEGMENT, SegmentRequest(image_id="never-embedded", prompts=CLICK), ImageNotCachedError),
        (
            EMBED,
            EmbedRequest(image=encode_image(random_pixels(1))[:100], image_id="truncated"),
            InvalidImageError,
        ),
    ],
)
def test_a_refusal_is_answered_not_raised_and_not_logged_as_a_failure(
    replica, operation, request_, error, caplog
):
    caplog.set_level(logging.INFO, logger="ray.serve")
    outcome = asyncio.run(getattr(replica, operation.name)(request_))
    assert isinstance(outcome, error)
    refusals = [record for record in caplog.records if record.name == "ray.serve"]
    assert [record.levelno for record in refusals] == [logging.INFO]
    assert outcome.code in refusals[0].getMessage() and refusals[0].exc_info is None

    # The ingress raises it again, so the API maps it to its status as before.
    with pytest.raises(error):
        asyncio.run(RayOwners(Handle(replica)).call(operation, request_))


def test_a_served_request_is_a_reply(replica):
    request = SegmentRequest(image=encode_image(random_pixels(2)), image_id="a", prompts=CLICK)
    reply = asyncio.run(RayOwners(Handle(replica)).call(SEGMENT, request))
    assert reply.replica == "r" and reply.embedding_cache == "miss"
    assert reply.response_headers()["x-sam3-image-id"] == reply.image_id == "a"


def test_the_ingress_asks_what_is_served_once_a_while(replica, monkeypatch):
    asked = []
    served = replica.engine.served_model()
    monkeypatch.setattr(replica, "served_model", lambda: asked.append(1) or _answer(served))
    owners = RayOwners(Handle(replica))
    assert asyncio.run(owners.served_model()) == served
    assert asyncio.run(owners.served_model()) == served
    assert len(asked) == 1
    monkeypatch.setattr(owners_module, "SERVED_MODEL_TTL_S", 0.0)
    asyncio.run(owners.served_model())
    assert len(asked) == 2


async def _answer(value: object) -> object:
    return value
