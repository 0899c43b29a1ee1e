"""The hand-off protocol between segmenter replicas (`deployments/handoff.py`), without Ray:
real `SegmenterReplica` request paths and `handoff_*` methods around tiny engines, calling
each other in-process (arguments and results pickled, as between Ray actors), under ring
changes delivered to each replica when the test says.

The same scenarios run on a Ray cluster in `tests/integration/test_handoff.py`."""

from __future__ import annotations

import asyncio
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from deployments.handoff import Handoff
from deployments.operations import EMBED, SEGMENT, Reply
from deployments.owners import _reply_or_raise
from deployments.ownership import Ownership
from deployments.ring import Ring, ring_key
from deployments.segmenter import SegmenterReplica
from sam3_core import EmbedRequest, ImageNotCachedError, SegmentRequest
from sam3_core.images import content_id
from tests.conftest import encode_image, random_pixels
from tests.unit.test_engine import clicks, images
from tests.unit.test_pictures import GatedEncode

TIMEOUT_S = 3.0


class Recorder:
    """Metrics stand-in: what a replica recorded."""

    def __init__(self) -> None:
        self.handoffs: list[str] = []

    def record_stats(self, stats: object) -> None:
        pass

    def record_timings(self, operation: str, timings: object) -> None:
        pass

    def record_handoff(self, direction: str, seconds: float) -> None:
        self.handoffs.append(direction)


class LocalPeers:
    """`Peers` over the replicas of a `LocalCluster`."""

    def __init__(self, cluster: LocalCluster, me: str) -> None:
        self.cluster = cluster
        self.me = me

    def _target(self, replica: str) -> SegmenterReplica:
        target = self.cluster.replicas.get(replica)
        if target is None or {replica, self.me} & self.cluster.dead:
            raise ConnectionError(f"{replica} or {self.me} is gone")
        return target

    async def _unread(self, replica: str, timeout_s: float) -> None:
        """A replica of another code version reads another board: a message to it waits
        for its timeout, as on Ray."""
        if self.cluster.versions.get(replica) != self.cluster.versions.get(self.me):
            self.cluster.calls.append((self.me, replica, "unread"))
            await asyncio.sleep(timeout_s)
            raise TimeoutError(f"{replica} reads another board")

    async def call(self, replica: str, method: str, *args: Any, timeout_s: float) -> Any:
        target = self._target(replica)
        await self._unread(replica, timeout_s)
        self.cluster.calls.append((self.me, replica, method))
        args = pickle.loads(pickle.dumps(args))  # what crosses between replicas is a copy
        result = await asyncio.wait_for(target.handoff.answer(method, args), timeout_s)
        return pickle.loads(pickle.dumps(result))

    async def notify(self, replica: str, method: str, *args: Any, timeout_s: float) -> None:
        target = self._target(replica)
        await self._unread(replica, timeout_s)
        self.cluster.calls.append((self.me, replica, method))
        args = pickle.loads(pickle.dumps(args))
        await target.handoff.answer(method, args)

    async def forward(
        self, replica: str, operation: str, request: Any, timeout_s: float, clock: int = 0
    ) -> Any:
        target = self._target(replica)
        self.cluster.calls.append((self.me, replica, "forward"))
        return await asyncio.wait_for(
            target.handoff_forwarded(operation, request, clock), timeout_s
        )

    async def alive(self, replica: str) -> bool:
        return (
            replica in self.cluster.replicas
            and replica not in self.cluster.dead
            and self.cluster.versions.get(replica) == self.cluster.versions.get(self.me)
            and time.monotonic() >= self.cluster.reads_from.get(replica, 0.0)
        )


class LocalCluster:
    """Replicas by name, each a `SegmenterReplica` around its own engine."""

    def __init__(self, make_segmenter) -> None:
        self.make_segmenter = make_segmenter
        self.replicas: dict[str, SegmenterReplica] = {}
        self.dead: set[str] = set()
        self.calls: list[tuple[str, str, str]] = []
        self.versions: dict[str, int] = {}  # code version of each replica (default: the same)
        self.reads_from: dict[str, float] = {}  # when a replica first reads its mailbox

    def start(self, name: str, version: int = 0) -> SegmenterReplica:
        self.versions[name] = version
        replica = object.__new__(SegmenterReplica)
        replica.engine = self.make_segmenter()
        replica.replica = name
        replica._pool = ThreadPoolExecutor(2)
        replica.metrics = Recorder()
        replica.handoff = Handoff(
            replica.engine, name, LocalPeers(self, name), TIMEOUT_S, replica.metrics
        )
        replica._ring_feed, replica._on_ring, replica._left = "local#Segmenter", print, True
        self.replicas[name] = replica
        return replica

    def ring(self, *members: str, only: tuple[str, ...] | None = None) -> Ring:
        """Tell the replicas (or `only` these) that the ring is now `members`."""
        ring = Ring(members)
        for name in only or tuple(self.replicas):
            if name not in self.dead:
                self.replicas[name].handoff.on_ring(ring)
        return ring

    async def settle(self) -> None:
        for name, replica in self.replicas.items():
            if name not in self.dead:
                await replica.handoff.drain()

    async def stop(self, name: str) -> None:
        """Scale-in: the replica leaves (Serve calls its `__del__`)."""
        self.replicas[name]._left = False
        await self.replicas[name].__del__()  # what Serve awaits
        del self.replicas[name]


@pytest.fixture
def cluster(make_segmenter) -> LocalCluster:
    return LocalCluster(make_segmenter)


def embed(data: bytes, image_id: str) -> EmbedRequest:
    return EmbedRequest(image=data, image_id=image_id, image_digest=content_id(data))


def click(image_id: str, data: bytes | None = None) -> SegmentRequest:
    digest = None if data is None else content_id(data)
    return SegmentRequest(
        image=data, image_id=image_id, image_digest=digest, prompts=clicks((7, 9))
    )


async def serve(replica, operation, request) -> Reply:
    """A replica's answer, its refusals raised as the ingress raises them."""
    return _reply_or_raise(await replica._serve(operation, request))


async def owner_call(cluster: LocalCluster, ring: Ring, operation, request) -> Reply:
    """What the ingress does: the request goes to the owner on the ring."""
    key = ring_key((request.tenant or "", request.image_id))
    return await serve(cluster.replicas[ring.owner(key)], operation, request)


def masks(reply: Reply) -> bytes:
    return reply.body


IDS = [f"img-{i}" for i in range(24)]


async def replicas_holding(cluster: LocalCluster, *names: str) -> Ring:
    """Start `names` on one ring and embed every id of `IDS` on its owner, all one picture
    (`images(1)`)."""
    for name in names:
        cluster.start(name)
    ring = cluster.ring(*names)
    (data,) = images(1)
    for image_id in IDS:
        await owner_call(cluster, ring, EMBED, embed(data, image_id))
    return ring


@pytest.mark.parametrize("scale_in", ["graceful", "crash"])
def test_a_moved_image_re_sent_elsewhere_is_never_answered_from_its_old_picture(cluster, scale_in):
    """The issue's stale scenario: 2 -> 3 -> 2 replicas, an id re-embedded with a new picture
    while it was away from its first owner; after the scale-in, clicks by id get the new one
    (handed back), or 404 if the added replica crashed (never the old picture)."""

    async def scenario() -> None:
        for name in ("a", "b"):
            cluster.start(name)
        two = cluster.ring("a", "b")
        old, new = images(2)
        for image_id in IDS:
            await owner_call(cluster, two, EMBED, embed(old, image_id))
        cluster.start("c")
        three = cluster.ring("a", "b", "c")
        await cluster.settle()
        moved = [i for i in IDS if three.owner(i) == "c"]
        assert moved, "some images move to the added replica"
        for image_id in moved:  # the client's tool re-sends the id with a new picture
            reply = await owner_call(cluster, three, EMBED, embed(new, image_id))
            assert reply.replica == "c" and reply.embedding_cache == "miss"
        if scale_in == "graceful":  # "c" leaves the ring, then Serve stops it
            cluster.ring("a", "b", only=("a", "b"))
            cluster.ring("a", "b", only=("c",))
            await cluster.stop("c")
        else:
            cluster.dead.add("c")
            cluster.ring("a", "b")
        await cluster.settle()
        expected_new = (await owner_call(cluster, two, SEGMENT, click("probe-new", new))).body
        expected_old = (await owner_call(cluster, two, SEGMENT, click("probe-old", old))).body
        assert expected_new != expected_old  # else this test could not tell them apart
        for image_id in IDS:
            if scale_in == "crash" and image_id in moved:
                with pytest.raises(ImageNotCachedError):
                    await owner_call(cluster, two, SEGMENT, click(image_id))
                continue
            reply = await owner_call(cluster, two, SEGMENT, click(image_id))
            want = expected_new if image_id in moved else expected_old
            assert reply.body == want, image_id
            assert reply.embedding_cache in ("hit", "handoff")

    asyncio.run(scenario())


def test_scale_out_and_in_embed_nothing_again(cluster):
    async def scenario() -> None:
        three = await replicas_holding(cluster, "a", "b", "c")
        embedded = {n: r.engine.stats().embedding_cache_misses for n, r in cluster.replicas.items()}
        cluster.start("d")
        four = cluster.ring("a", "b", "c", "d")
        await cluster.settle()
        outcomes = [(await owner_call(cluster, four, SEGMENT, click(i))) for i in IDS]
        moved = [i for i in IDS if three.owner(i) != four.owner(i)]
        assert moved and all(four.owner(i) == "d" for i in moved)
        assert [r.embedding_cache for r in outcomes] == [
            "handoff" if i in moved else "hit" for i in IDS
        ]
        # Scale-in of an original replica: its images go to their successors.
        cluster.ring("a", "c", "d")
        await cluster.stop("b")
        await cluster.settle()
        after = Ring(["a", "c", "d"])
        for image_id in IDS:
            reply = await owner_call(cluster, after, SEGMENT, click(image_id))
            assert reply.embedding_cache in ("hit", "handoff")
        for name, replica in cluster.replicas.items():
            assert replica.engine.stats().embedding_cache_misses == embedded.get(name, 0), name
        assert "received" in cluster.replicas["d"].metrics.handoffs

    asyncio.run(scenario())


def test_a_redeploy_s_last_old_replica_leaves_at_once(cluster):
    """A rolling update (new code or config): the old version's last replica leaves a ring
    of new-version replicas, which read another board (and may run another model). Nothing
    is sent to them, and it leaves at once instead of waiting out its grace period (30 s and
    a forced kill, as measured on Ray before); its images are dropped, re-embedded on resend."""

    async def scenario() -> None:
        cluster.start("old")
        (data,) = images(1)
        for image_id in IDS:
            await owner_call(cluster, Ring(["old"]), EMBED, embed(data, image_id))
        for name in ("new-1", "new-2"):
            cluster.start(name, version=1)
        cluster.ring("new-1", "new-2")
        started = time.monotonic()
        await cluster.stop("old")
        assert time.monotonic() - started < TIMEOUT_S / 2
        assert not [call for call in cluster.calls if call[0] == "old"], cluster.calls
        for name in ("new-1", "new-2"):
            assert cluster.replicas[name].engine.stats().embedding_cache_entries == 0

    asyncio.run(scenario())


def test_replicas_that_leave_together_hand_off_and_stop_at_once(cluster):
    """A scale-in by two at once: both leavers hand their images to the replica that stays
    and stop. Each used to wait out the hand-off timeout for the other's "settled", which
    went to the ring's replicas only (30 s and a forced kill each, on Ray); a leaver now
    also tells the replicas that left, once it sends them nothing more."""

    async def scenario() -> None:
        await replicas_holding(cluster, "a", "b", "c")
        one = cluster.ring("c")
        started = time.monotonic()
        await asyncio.gather(cluster.stop("a"), cluster.stop("b"))
        assert time.monotonic() - started < TIMEOUT_S / 2
        for image_id in IDS:
            reply = await owner_call(cluster, one, SEGMENT, click(image_id))
            assert reply.embedding_cache in ("hit", "handoff"), (image_id, reply)

    asyncio.run(scenario())


@pytest.mark.parametrize("after", ["deleted", "redeployed"])
def test_the_replicas_of_a_deleted_or_redeployed_app_stop_at_once(cluster, after):
    """`serve shutdown`, an app deleted, or its new version deployed: every old replica
    leaves a ring with no replica of its version, nowhere to send its images, and stops at
    once (30 s each and a forced kill on Ray before: they waited for each other)."""

    async def scenario() -> None:
        await replicas_holding(cluster, "a", "b")
        if after == "deleted":
            cluster.ring()
        else:
            cluster.start("new", version=1)
            cluster.ring("new", only=("a", "b"))
        started = time.monotonic()
        await asyncio.gather(cluster.stop("a"), cluster.stop("b"))
        assert time.monotonic() - started < TIMEOUT_S / 2

    asyncio.run(scenario())


def test_a_replica_that_has_not_read_its_mailbox_yet_still_gets_its_images(cluster):
    """The new ring can reach the old owner before the added replica has read the hand-off
    board once: it is asked again for a while, not taken for another version."""

    async def scenario() -> None:
        cluster.start("a")
        (data,) = images(1)
        for image_id in IDS:
            await owner_call(cluster, Ring(["a"]), EMBED, embed(data, image_id))
        cluster.start("b")
        cluster.reads_from["b"] = time.monotonic() + 0.3
        two = cluster.ring("a", "b")
        await cluster.settle()
        moved = [i for i in IDS if two.owner(i) == "b"]
        assert moved
        for image_id in moved:
            reply = await owner_call(cluster, two, SEGMENT, click(image_id))
            assert (reply.replica, reply.embedding_cache) == ("b", "handoff")

    asyncio.run(scenario())


def test_a_click_that_arrives_before_its_image_waits_for_it(cluster):
    """The new owner hears of the new ring before the previous owner does: a click by id
    for a moving image waits for the manifest and the image, instead of a 404."""

    async def scenario() -> None:
        for name in ("a", "b"):
            cluster.start(name)
        one = cluster.ring("a")
        (data,) = images(1)
        for image_id in IDS:
            await owner_call(cluster, one, EMBED, embed(data, image_id))
        two = cluster.ring("a", "b", only=("b",))
        moved = next(i for i in IDS if two.owner(i) == "b")
        waiting = asyncio.ensure_future(owner_call(cluster, two, SEGMENT, click(moved)))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        cluster.ring("a", "b", only=("a",))  # the previous owner hears of it, and sends
        reply = await asyncio.wait_for(waiting, TIMEOUT_S)
        assert (reply.replica, reply.embedding_cache) == ("b", "handoff")

    asyncio.run(scenario())


def test_a_newer_picture_announced_on_its_way_is_waited_for(cluster):
    """The owner holds an id's older picture when a replica that took new bytes for it (by
    a router behind) announces the new one (`coming`, with its version): a click by id
    waits for it instead of answering from the older one (a stale answer before; the
    simulation's scale-in-out seed 838)."""

    async def scenario() -> None:
        for name in ("a", "b"):
            cluster.start(name)
        two = cluster.ring("a", "b")
        old, new = images(2)
        a, b = cluster.replicas["a"], cluster.replicas["b"]
        image_id = next(i for i in IDS if two.owner(i) == "b")
        probe = next(i for i in IDS if two.owner(i) == "a")
        await serve(b, EMBED, embed(old, image_id))
        want_old = (await serve(b, SEGMENT, click(image_id))).body
        a.handoff.ownership.clock.observe(b.handoff.ownership.clock.now)  # as a forward does
        await serve(a, EMBED, embed(new, probe))
        want_new = (await serve(a, SEGMENT, click(probe))).body
        assert want_new != want_old
        state = a.engine.pictures.export_image(("", probe))
        clock = a.handoff.ownership.clock.now
        b.handoff.coming("a", [("", image_id)], clock, [state.version])
        waiting = asyncio.ensure_future(serve(b, SEGMENT, click(image_id)))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await b.handoff.adopt("a", [(("", image_id), state)], clock)
        reply = await asyncio.wait_for(waiting, TIMEOUT_S)
        assert reply.body == want_new
        # The same announcement again, once the picture is here, holds nothing up.
        b.handoff.coming("a", [("", image_id)], clock, [state.version])
        reply = await asyncio.wait_for(serve(b, SEGMENT, click(image_id)), 1.0)
        assert reply.body == want_new

    asyncio.run(scenario())


def test_a_crashed_owners_images_are_lost_without_a_long_wait(cluster):
    async def scenario() -> None:
        two = await replicas_holding(cluster, "a", "b")
        (data,) = images(1)
        cluster.dead.add("b")  # crashed: sends nothing
        one = cluster.ring("a")
        lost = next(i for i in IDS if two.owner(i) == "b")
        started = time.monotonic()
        with pytest.raises(ImageNotCachedError):
            await owner_call(cluster, one, SEGMENT, click(lost))
        assert time.monotonic() - started < TIMEOUT_S / 2
        reply = await owner_call(cluster, one, SEGMENT, click(lost, data))
        assert (reply.replica, reply.embedding_cache) == ("a", "miss")

    asyncio.run(scenario())


def test_a_replica_killed_while_handing_off_leaves_no_wrong_picture(cluster):
    """The leaving replica dies after its manifest, before its images: requests for them
    get 404 once it is found gone (never a stale picture, never another error)."""

    async def scenario() -> None:
        for name in ("a", "b"):
            cluster.start(name)
        two = cluster.ring("a", "b")
        old, new = images(2)
        for image_id in IDS:
            await owner_call(cluster, two, EMBED, embed(old, image_id))
        leaving = cluster.replicas["b"]
        # It dies on its first image: the manifest went out, no image arrives.
        export = leaving.engine.pictures.export_image

        def die(*args):
            cluster.dead.add("b")
            return export(*args)

        leaving.engine.pictures.export_image = die
        one = cluster.ring("a")
        await leaving.handoff.drain()
        lost = [i for i in IDS if two.owner(i) == "b"]
        for image_id in lost:
            with pytest.raises(ImageNotCachedError):
                await owner_call(cluster, one, SEGMENT, click(image_id))
            reply = await owner_call(cluster, one, SEGMENT, click(image_id, new))
            assert reply.embedding_cache == "miss"
            again = await owner_call(cluster, one, SEGMENT, click(image_id))
            expected = await owner_call(cluster, one, SEGMENT, click("probe", new))
            assert again.body == expected.body

    asyncio.run(scenario())


def owner_and_helper(cluster: LocalCluster) -> tuple[str, SegmenterReplica, SegmenterReplica]:
    """Replicas "a" and "b" on one ring, and an id "a" owns: (id, owner, helper)."""
    for name in ("a", "b"):
        cluster.start(name)
    two = cluster.ring("a", "b")
    image_id = next(i for i in IDS if two.owner(i) == "a")
    return image_id, cluster.replicas["a"], cluster.replicas["b"]


def test_a_helper_borrows_the_owners_picture_and_forgets_it_when_it_changes(cluster):
    async def scenario() -> None:
        image_id, owner, helper = owner_and_helper(cluster)
        old, new = images(2)
        at_owner = await serve(owner, SEGMENT, click(image_id, old))
        # The router sends a click to the helper (the owner is over its load bound).
        helped = await serve(helper, SEGMENT, click(image_id))
        assert (helped.replica, helped.embedding_cache) == ("b", "handoff")
        assert helped.body == at_owner.body
        assert (await serve(helper, SEGMENT, click(image_id))).embedding_cache == "hit"
        # New content at the owner: the helper's copy is forgotten before the owner answers.
        await serve(owner, EMBED, embed(new, image_id))
        assert not helper.engine.pictures.holds(("", image_id))
        expected = await serve(owner, SEGMENT, click(image_id))
        assert (await serve(helper, SEGMENT, click(image_id))).body == expected.body
        assert helper.engine.stats().embedding_cache_misses == 0  # never embedded there

    asyncio.run(scenario())


def test_a_helper_sends_a_resend_of_its_copy_s_bytes_on_to_the_owner(cluster):
    """Bytes are a write even when they are the picture a helper borrowed: only the owner
    orders writes (a copy restamped at the helper outranked the owner's newer picture once a
    ring change made the helper the owner: simulation seed 2381 with every fault)."""

    async def scenario() -> None:
        image_id, owner, helper = owner_and_helper(cluster)
        old, new = images(2)
        await serve(owner, SEGMENT, click(image_id, old))
        assert (await serve(helper, SEGMENT, click(image_id))).embedding_cache == "handoff"
        resent = await serve(helper, SEGMENT, click(image_id, old))
        assert (resent.replica, resent.embedding_cache) == ("a", "hit")
        await serve(owner, EMBED, embed(new, image_id))
        cluster.ring("b")
        await cluster.settle()
        assert helper.engine.pictures.holds(("", image_id), content_id(new))

    asyncio.run(scenario())


def test_a_helper_forwards_what_only_the_owner_can_embed(cluster):
    async def scenario() -> None:
        for name in ("a", "b"):
            cluster.start(name)
        two = cluster.ring("a", "b")
        (data,) = images(1)
        image_id = next(i for i in IDS if two.owner(i) == "a")
        helper = cluster.replicas["b"]
        reply = await serve(helper, SEGMENT, click(image_id, data))  # a picture "a" lacks
        assert (reply.replica, reply.embedding_cache) == ("a", "miss")
        assert not helper.engine.pictures.holds(("", image_id))
        with pytest.raises(ImageNotCachedError):  # the owner's 404, for an unknown id
            await serve(helper, SEGMENT, click("never-sent-" + image_id))

    asyncio.run(scenario())


def test_logits_move_with_the_image(cluster):
    async def scenario() -> None:
        for name in ("a", "b"):
            cluster.start(name)
        one = cluster.ring("a")
        (data,) = images(1)
        image_id = "with-logits"
        first = SegmentRequest(
            image=data,
            image_id=image_id,
            image_digest=content_id(data),
            prompts=clicks((7, 9)),
            save_logits_to_cache=True,
        )
        await owner_call(cluster, one, SEGMENT, first)
        refine = SegmentRequest(
            image_id=image_id, prompts=clicks((7, 9), (30, 20)), load_logits_from_cache=True
        )
        expected = await owner_call(cluster, one, SEGMENT, refine)
        two = cluster.ring("a", "b")
        await cluster.settle()
        owner = two.owner(image_id)
        reply = await owner_call(cluster, two, SEGMENT, refine)
        assert reply.replica == owner and reply.headers["x-sam3-logits-cache"] == "hit"
        assert np.array_equal(reply.body, expected.body)

    asyncio.run(scenario())


def test_an_image_being_embedded_when_its_owner_leaves_follows_it(cluster, monkeypatch):
    """A replica leaves while it embeds an image: the image is in its manifest, and its new
    owner's click waits for it instead of a 404."""

    async def scenario() -> None:
        for name in ("a", "b"):
            cluster.start(name)
        two = cluster.ring("a", "b")
        image_id = next(i for i in IDS if two.owner(i) == "b")
        leaving = cluster.replicas["b"]
        gate = GatedEncode(leaving.engine, monkeypatch).hold(70, 90)
        data = encode_image(random_pixels(5, 70, 90))
        embedding = asyncio.ensure_future(leaving._serve(EMBED, embed(data, image_id)))
        await asyncio.sleep(0.3)  # the embed is running on "b"
        one = cluster.ring("a")
        click_by_id = asyncio.ensure_future(owner_call(cluster, one, SEGMENT, click(image_id)))
        await asyncio.sleep(0.3)
        assert not click_by_id.done()  # waiting for the image, not a 404
        gate.set()
        assert (await embedding).embedding_cache == "miss"
        reply = await asyncio.wait_for(click_by_id, TIMEOUT_S)
        assert (reply.replica, reply.embedding_cache) == ("a", "handoff")

    asyncio.run(scenario())


def test_an_image_whose_request_waits_in_the_leaving_replica_follows_it(cluster, monkeypatch):
    """The request that brings the image is still queued for an engine thread when its
    replica leaves: the image is announced, and sent once that request is done."""

    async def scenario() -> None:
        for name in ("a", "b"):
            cluster.start(name)
        two = cluster.ring("a", "b")
        image_id = next(i for i in IDS if two.owner(i) == "b")
        leaving = cluster.replicas["b"]
        leaving._pool = ThreadPoolExecutor(1)
        gate = GatedEncode(leaving.engine, monkeypatch).hold(70, 90)
        blocker = asyncio.ensure_future(
            leaving._serve(EMBED, embed(encode_image(random_pixels(6, 70, 90)), "blocker"))
        )
        await asyncio.sleep(0.2)  # the only engine thread is busy
        data = encode_image(random_pixels(7, 60, 80))
        queued = asyncio.ensure_future(leaving._serve(EMBED, embed(data, image_id)))
        await asyncio.sleep(0.2)
        one = cluster.ring("a")
        click_by_id = asyncio.ensure_future(owner_call(cluster, one, SEGMENT, click(image_id)))
        await asyncio.sleep(0.3)
        assert not click_by_id.done()
        gate.set()
        await blocker
        assert (await queued).embedding_cache == "miss"
        reply = await asyncio.wait_for(click_by_id, TIMEOUT_S)
        assert (reply.replica, reply.embedding_cache) == ("a", "handoff")
        assert reply.body == (await owner_call(cluster, one, SEGMENT, click("p", data))).body

    asyncio.run(scenario())


def test_an_owner_knows_when_a_picture_it_lent_is_not_the_one_it_holds():
    """Two writes at once on the owner, a copy of the first lent between them, the second
    ending on the content it started on: the helper's copy is still another picture, so its
    borrowers must forget (simulation seed 2484 with every fault, under a variant)."""
    ownership = Ownership("a", ttl_s=60.0)
    key = ("", "cat")
    ownership.lend(key, "b", "old")
    assert not ownership.lent_other_than(key, "old")
    ownership.lend(key, "c", "new")
    assert ownership.lent_other_than(key, "old") and ownership.lent_other_than(key, "new")
    assert ownership.changed(key) == {"b", "c"}
    assert not ownership.lent_other_than(key, "old")
