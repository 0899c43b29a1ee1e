"""The six orders of events the ownership issue found in the hand-off, each made on purpose
over real replicas (`tests/unit/test_handoff.py`'s `LocalCluster`: real `SegmenterReplica`
request paths, `Handoff` and tiny engines). Each failed before `deployments.ownership`
(finding 5, versions by wall clock, is `test_engine_handoff.py`'s
`test_sending_the_same_bytes_again_makes_them_the_newest_content`)."""

from __future__ import annotations

import asyncio

import pytest

from deployments.operations import EMBED, SEGMENT
from deployments.ring import Ring
from tests.unit.test_engine import images
from tests.unit.test_handoff import IDS, LocalCluster, click, embed, serve

# Long enough that a request waiting it out is told apart from one that needed no wait.
LONG_TIMEOUT_S = 20.0
# What "at once" means here: far under LONG_TIMEOUT_S, far over a tiny engine's work.
PROMPT_S = 8.0


@pytest.fixture
def cluster(make_segmenter) -> LocalCluster:
    return LocalCluster(make_segmenter)


def start(cluster: LocalCluster, *names: str, timeout_s: float | None = None) -> None:
    for name in names:
        replica = cluster.start(name)
        if timeout_s is not None:
            replica.handoff.timeout_s = timeout_s


async def bodies(cluster: LocalCluster, replica: str, *pictures: bytes) -> list[bytes]:
    """What a click answers from each picture (embedded under probe ids, then dropped)."""
    found = []
    for n, data in enumerate(pictures):
        reply = await serve(cluster.replicas[replica], SEGMENT, click(f"probe-{n}", data))
        cluster.replicas[replica].engine.pictures.drop_image(("", f"probe-{n}"))
        found.append(reply.body)
    assert len(set(found)) == len(found)  # else the tests could not tell pictures apart
    return found


def test_1_new_bytes_that_fail_after_their_embed_still_reach_the_borrowers(cluster):
    """A request gives the id new content, then fails (a CUDA OOM in the decoder): the
    helper's copy of the old picture must be forgotten all the same."""

    async def scenario() -> None:
        start(cluster, "a", "b")
        two = cluster.ring("a", "b")
        old, new = images(2)
        want_old, want_new = await bodies(cluster, "a", old, new)
        image_id = next(i for i in IDS if two.owner(i) == "a")
        owner, helper = cluster.replicas["a"], cluster.replicas["b"]
        await serve(owner, EMBED, embed(old, image_id))
        assert (await serve(helper, SEGMENT, click(image_id))).body == want_old  # borrowed

        def out_of_memory(*args, **kwargs):
            raise RuntimeError("CUDA out of memory")

        decode = owner.engine.decode
        owner.engine.decode = out_of_memory
        with pytest.raises(RuntimeError):
            await serve(owner, SEGMENT, click(image_id, new))
        owner.engine.decode = decode
        assert (await serve(helper, SEGMENT, click(image_id))).body == want_new

    asyncio.run(scenario())


def test_2_a_wait_ends_when_the_image_arrives_whatever_ring_its_sender_saw(cluster):
    """The sender's router skipped the ring the new owner waits under: its manifest names
    another ring. The click ends when the image is there, not after the hand-off timeout."""

    async def scenario() -> None:
        start(cluster, "a", timeout_s=LONG_TIMEOUT_S)
        (data,) = images(1)
        one, two, three = Ring(["a"]), Ring(["a", "b"]), Ring(["a", "b", "c"])
        image_id = next(i for i in IDS if two.owner(i) == "b" and three.owner(i) == "b")
        cluster.ring("a")
        await serve(cluster.replicas["a"], EMBED, embed(data, image_id))
        (want,) = await bodies(cluster, "a", data)
        start(cluster, "b", "c", timeout_s=LONG_TIMEOUT_S)
        cluster.ring("a", only=("b", "c"))
        cluster.ring("a", "b", only=("b",))  # "b" sees every ring; "a" will skip this one
        assert one.owner(image_id) == "a"
        waiting = asyncio.ensure_future(serve(cluster.replicas["b"], SEGMENT, click(image_id)))
        await asyncio.sleep(0.2)
        cluster.ring("a", "b", "c", only=("a", "c"))
        reply = await asyncio.wait_for(waiting, PROMPT_S)
        assert (reply.replica, reply.embedding_cache, reply.body) == ("b", "handoff", want)

    asyncio.run(scenario())


def test_3a_an_owner_that_evicted_a_lent_image_still_reaches_its_borrower(cluster):
    """The owner evicts an image it lent, then the ring changes (it dropped whom it lent
    to): new bytes for the id later must still make the helper forget its old copy."""

    async def scenario() -> None:
        start(cluster, "a", "b", "c")
        two = cluster.ring("a", "b")
        three = Ring(["a", "b", "c"])
        old, new = images(2)
        want_old, want_new = await bodies(cluster, "a", old, new)
        image_id = next(i for i in IDS if two.owner(i) == "a" and three.owner(i) == "a")
        owner, helper = cluster.replicas["a"], cluster.replicas["b"]
        await serve(owner, EMBED, embed(old, image_id))
        assert (await serve(helper, SEGMENT, click(image_id))).body == want_old  # borrowed
        owner.engine.pictures.drop_image(("", image_id))  # evicted (LRU)
        cluster.ring("a", "b", "c")
        await cluster.settle()
        await serve(owner, EMBED, embed(new, image_id))
        assert (await serve(helper, SEGMENT, click(image_id))).body == want_new

    asyncio.run(scenario())


def test_3b_a_helper_that_became_the_owner_still_hears_of_newer_content(cluster):
    """The helper becomes the owner (its ring changed first) and keeps its borrowed copy;
    the old owner, still on the old ring, takes new bytes: the copy must go, and a click at
    the new owner gets the new picture once the old owner hands it over."""

    async def scenario() -> None:
        start(cluster, "a", "b", "c")
        two = cluster.ring("a", "b")
        later = Ring(["b", "c"])
        old, new = images(2)
        want_old, want_new = await bodies(cluster, "a", old, new)
        image_id = next(i for i in IDS if two.owner(i) == "a" and later.owner(i) == "b")
        owner, helper = cluster.replicas["a"], cluster.replicas["b"]
        await serve(owner, EMBED, embed(old, image_id))
        assert (await serve(helper, SEGMENT, click(image_id))).body == want_old  # borrowed
        cluster.ring("b", "c", only=("b", "c"))  # the helper is the owner now
        await serve(owner, EMBED, embed(new, image_id))  # an ingress on the old ring
        waiting = asyncio.ensure_future(serve(helper, SEGMENT, click(image_id)))
        await asyncio.sleep(0.2)
        cluster.ring("b", "c", only=("a",))  # the old owner hears of it, and sends
        assert (await asyncio.wait_for(waiting, PROMPT_S)).body == want_new

    asyncio.run(scenario())


def test_4_an_old_owner_forwarding_new_bytes_does_not_hold_up_its_own_hand_off(cluster):
    """An ingress on the old ring sends new bytes to the old owner, which (on the new ring)
    forwards them to the new owner; the new owner waits for the old owner's hand-off, which
    must not wait for the forwarded request. Neither times out, and the other images the
    old owner hands over are still awaited (no 404)."""

    async def scenario() -> None:
        start(cluster, "a", "b", timeout_s=LONG_TIMEOUT_S)
        one, two = Ring(["a"]), Ring(["a", "b"])
        cluster.ring("a")
        old, new = images(2)
        moved = [i for i in IDS if two.owner(i) == "b"]
        for image_id in moved:
            await serve(cluster.replicas["a"], EMBED, embed(old, image_id))
        want_old, want_new = await bodies(cluster, "a", old, new)
        assert one.owner(moved[0]) == "a"
        cluster.ring("a", "b")
        resent = asyncio.ensure_future(serve(cluster.replicas["a"], SEGMENT, click(moved[0], new)))
        others = [
            asyncio.ensure_future(serve(cluster.replicas["b"], SEGMENT, click(i)))
            for i in moved[1:]
        ]
        reply = await asyncio.wait_for(resent, PROMPT_S)
        assert (reply.replica, reply.body) == ("b", want_new)
        for other in asyncio.as_completed(others, timeout=PROMPT_S):
            assert (await other).body == want_old
        assert (await serve(cluster.replicas["b"], SEGMENT, click(moved[0]))).body == want_new

    asyncio.run(scenario())


def test_6_a_client_hanging_up_does_not_cancel_the_fetch_others_share(cluster):
    """Two clicks at a helper share one fetch from the owner; the first client hangs up
    while it runs: the second still gets its answer."""

    async def scenario() -> None:
        start(cluster, "a", "b", timeout_s=LONG_TIMEOUT_S)
        two = cluster.ring("a", "b")
        (data,) = images(1)
        (want,) = await bodies(cluster, "a", data)
        image_id = next(i for i in IDS if two.owner(i) == "a")
        owner, helper = cluster.replicas["a"], cluster.replicas["b"]
        await serve(owner, EMBED, embed(data, image_id))
        export = owner.engine.pictures.export_image

        def slow_export(*args):
            import time

            time.sleep(0.5)
            return export(*args)

        owner.engine.pictures.export_image = slow_export
        first = asyncio.ensure_future(serve(helper, SEGMENT, click(image_id)))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(serve(helper, SEGMENT, click(image_id)))
        await asyncio.sleep(0.1)
        first.cancel()  # the client hung up: Serve cancels its request
        reply = await asyncio.wait_for(second, PROMPT_S)
        assert (reply.replica, reply.body) == ("b", want)

    asyncio.run(scenario())
