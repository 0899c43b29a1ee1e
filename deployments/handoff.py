"""Images that change owner replica without being embedded again: a segmenter replica's side
of the hand-off (`Handoff`). Replicas reach each other through `Peers` (on Ray,
`deployments.peers.RayPeers`: a mailbox actor for messages, Ray's object store for images;
never the client).

Each replica knows the ring (`deployments.ring`, from Ray Serve's replica-set updates). When it
changes:

- every replica **sends** the images it holds but no longer owns to their new owners: first a
  manifest to every other replica of the new ring (the keys headed there, maybe none), then
  each image, most recently used first (`Pictures.export_image` there, `adopt_image` here),
  then a "settled" notice. It forgets each image once sent, delivered or not: a copy kept by a
  replica that no longer owns it could be answered from after the id got new content
  elsewhere — the stale picture the issue reproduced after a scale-out and a scale-in;
- a replica asked about an image it now owns but does not hold **waits** (at most
  `handoff_timeout_seconds`) for the manifest of each replica that owned the image before, and
  if the image is listed, for the image, instead of answering 404 or embedding it again.

A replica stopped gracefully (scale-in) is dropped from the ring at once, so it sends all its
images; its `__del__` (`leave`) waits for that within `graceful_shutdown_timeout_s`. A replica
that crashes sends nothing: requests for its images wait until Ray reports it gone, then get
404 (by id) or embed the image again (sent with it).

**Helpers** (`deployments.router`, bounded load): a replica asked about an image it does not
own fetches it from the owner and keeps a *borrowed* copy; the owner remembers its borrowers
and has them forget their copies before it answers a request that gave the id new content. A
replica that cannot get the picture a request needs from the owner forwards the request to the
owner: it never embeds an image it does not own.

Everything here runs on the replica's event loop; engine calls that may block (export, adopt)
run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from deployments.handoff_receiving import Receiving
from deployments.handoff_sending import Sending
from deployments.ownership import Ownership, Role
from deployments.peers import HandoffRecorder, Peers
from deployments.ring import Ring, request_key, ring_key
from sam3_core.calls import ImageRequest
from sam3_core.engine import ImageKey, Segmenter

logger = logging.getLogger("ray.serve")

# A forwarded request may wait in the owner's queue and embed there: the proxy's own bound.
FORWARD_TIMEOUT_S = 120.0
# Earlier rings a replica remembers, to know who owned an image before.
RING_HISTORY = 4
# How often a borrower is asked to forget a replaced picture before the write is answered.
FORGET_ATTEMPTS = 2
# What other replicas may call (`answer`).
CALLS = frozenset({"manifest", "settled", "coming", "not_coming", "adopt", "export", "forget"})


class Handoff(Receiving, Sending):
    """One replica's part in moving images between owners (see the module's docstring). Which
    state each image is in (owned, lent, borrowed, receiving, sending, forgotten) is
    `self.ownership`'s (`deployments.ownership`); this class moves messages and pictures."""

    def __init__(
        self,
        engine: Segmenter,
        me: str,
        peers: Peers,
        timeout_s: float,
        recorder: HandoffRecorder | None = None,
        concurrency: int = 2,
    ) -> None:
        self.engine = engine
        self.me = me
        self.peers = peers
        self.timeout_s = timeout_s
        self.recorder = recorder
        self.ring: Ring | None = None
        self._history: deque[Ring] = deque(maxlen=RING_HISTORY)
        self._first_ring: Ring | None = None  # the replicas there when this one joined
        self.ownership = Ownership(me, timeout_s)
        engine.pictures.stamp = self.ownership.clock.tick
        # Each sender's latest manifest (its ring's version, the keys it lists) and the
        # version it said "settled" for; what changed since a waiter last looked.
        # `relaying`: more images may come from it before its "settled" (images on their way
        # to it that are not its own, or a replica that left and has not yet settled with it).
        self._manifests: dict[str, tuple[str, frozenset[ImageKey]]] = {}
        self._relaying: set[str] = set()
        # For each sender's latest manifest, the keys it relays and the replicas it awaits
        # them from: if the relay dies, those still send them to their owner.
        self._upstream: dict[str, dict[ImageKey, frozenset[str]]] = {}
        self._settled: dict[str, str] = {}
        # Keys announced by `coming`, by whom and when: a sender's "settled" does not end
        # them; they end when the key comes, its sender says it will not, or the timeout.
        self._coming: dict[ImageKey, dict[str, float]] = {}
        # (key, earlier owner) pairs a request gave up waiting on: on this ring, no request
        # waits on them again (emptied at each ring change).
        self._waited_out: set[tuple[ImageKey, str]] = set()
        self._news = asyncio.Event()
        self._fetches: dict[tuple[ImageKey, str | None], asyncio.Task[bool]] = {}
        # Requests running here (a token each), by key; who waits for a key to have none.
        self._serving: dict[ImageKey, set[object]] = {}
        self._quiet: dict[ImageKey, asyncio.Event] = {}
        # Forgotten pictures that the requests running here when they were forgotten may
        # still read (`_stale_readers`): dropped once those end. Later requests wait.
        self._stale: dict[ImageKey, str] = {}
        self._stale_readers: dict[ImageKey, set[object]] = {}
        # Keys a hand-off waits to send until the requests running for them end: new
        # requests for them go to their owner meanwhile, else a stream of them (from an
        # ingress on an old ring) would hold the hand-off up until its timeout.
        self._draining: Counter[ImageKey] = Counter()
        # Borrowers being told to forget a picture replaced here: no request for the key is
        # answered until they have (an answer from the new picture acknowledges it).
        self._invalidating: dict[ImageKey, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        # The latest ring change's sending: the next one says "settled" only after it.
        self._moving: asyncio.Task | None = None
        self._leaving = False  # stopping: images that reach it go on at once
        self._concurrency = concurrency
        self._sending: asyncio.Semaphore | None = None

    @property
    def borrowed(self) -> dict[ImageKey, str]:
        """Borrowed keys and their lenders (tests, metrics)."""
        return {k: self.ownership.peer(k) for k in self.ownership.keys(Role.BORROWED)}  # type: ignore[misc]

    # Calls from other replicas ---------------------------------------------------------

    async def answer(self, method: str, args: tuple) -> Any:
        """Another replica's call (`Peers.call`)."""
        if method not in CALLS:
            raise ValueError(f"no hand-off call {method!r}")
        result = getattr(self, method)(*args)
        return await result if inspect.isawaitable(result) else result

    # Helpers' side: fetching from the owner, forgetting ---------------------------------

    async def export(self, key: ImageKey, content_digest: str | None, borrower: str) -> Any:
        """This replica's picture of `key` for `borrower` (None when it has no such one, or
        holds only a borrowed copy, is sending it away, or waits for another replica's
        picture of it, which may be newer)."""
        key = tuple(key)  # type: ignore[assignment]
        unlendable = (Role.BORROWED, Role.SENDING, Role.RECEIVING)
        if self.ownership.role(key) in unlendable:
            return None
        self._sweep()
        state = await asyncio.to_thread(self.engine.pictures.export_image, key, content_digest)
        if state is None or self.ownership.role(key) in unlendable:
            return None
        self.ownership.lend(key, borrower, state.content_digest)
        return state

    def forget(self, key: ImageKey, version: int) -> None:
        """The owner holds `key` at `version`: drop an older copy (borrowed, or borrowed once
        and kept when this replica became the owner), and refuse an older one on its way."""
        key = tuple(key)  # type: ignore[assignment]
        held = self.engine.pictures.image_version(key)
        if held is None:
            self.ownership.forget(key, version, self._now())
            return
        if self.ownership.forget(key, version, self._now()) or (
            held[1] < version and self.ownership.role(key) is Role.FORGOTTEN
        ):
            self._drop_borrowed(key, held[0])

    def _drop_borrowed(self, key: ImageKey, digest: str) -> None:
        """Drop the copy of `key` (`digest`) held here; requests sent before the change
        finish from it."""
        self.ownership.unborrow(key)
        readers = self._serving.get(key)
        if readers:
            self._stale[key] = digest
            self._stale_readers[key] = set(readers)
        else:
            self.engine.pictures.drop_image(key, digest)

    def _drop_stale(self, key: ImageKey) -> None:
        digest = self._stale.pop(key, None)
        self._stale_readers.pop(key, None)
        if digest is not None:
            self.engine.pictures.drop_image(key, digest)
            self._announce_news()

    async def _until_dropped(self, key: ImageKey) -> None:
        """Wait (bounded) until the forgotten picture of `key` that earlier requests still
        read is dropped; past the timeout it is dropped under them."""
        if not await self._while(lambda: key in self._stale):
            self._drop_stale(key)

    async def _while(self, busy: Callable[[], bool]) -> bool:
        """Wait until `busy()` is false, looking again at each piece of news (and every
        second), within the hand-off timeout; returns whether it ended in time."""
        deadline = self._now() + self.timeout_s
        while busy():
            remaining = deadline - self._now()
            if remaining <= 0:
                return False
            news = self._news
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(news.wait(), min(remaining, 1.0))
        return True

    def _sweep(self) -> None:
        now = self._now()
        for key, senders in list(self._coming.items()):
            for sender, since in list(senders.items()):
                if now - since >= self.timeout_s:
                    self._received(key, sender)
        orphans = self.ownership.sweep(self.engine.pictures.holds, self._now())
        for borrower, keys in orphans.items():
            version = self.ownership.clock.tick()
            for key in keys:
                self._spawn(self._call_quietly(borrower, "forget", key, version))

    # Requests ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(
        self, request: ImageRequest, forwarded: bool = False
    ) -> AsyncIterator[str | None]:
        """Around a request served here: first its image, from the replica that has it if
        that is another (`prepare`); yields the owner to forward the request to instead, or
        None to serve it here. While the request runs here, its image is not sent away (it
        may be embedding it: the image goes once that is done); a request sent on to the
        owner does not hold it (the owner may be waiting for it). Before the request is
        answered, borrowers forget a picture it replaced, whether or not it succeeded."""
        key = request_key(request)
        token = object()
        self._serving.setdefault(key, set()).add(token)
        running = True
        before = self.engine.pictures.image_version(key)
        try:
            owner = await self.prepare(request, forwarded, token)
            if owner is not None:
                running = False
                self._done_serving(key, token)
            yield owner
        finally:
            if running:
                self._done_serving(key, token)
                after = self.engine.pictures.image_version(key)
                if after is not None and (
                    before is None
                    or after[0] != before[0]
                    or self.ownership.lent_other_than(key, after[0])
                ):
                    await asyncio.shield(self._invalidate(key))
                elif (pending := self._invalidating.get(key)) is not None:
                    await asyncio.shield(pending)

    def _done_serving(self, key: ImageKey, token: object) -> None:
        stale_readers = self._stale_readers.get(key)
        if stale_readers is not None:
            stale_readers.discard(token)
            if not stale_readers:
                self._drop_stale(key)
        running = self._serving[key]
        running.discard(token)
        if not running:
            del self._serving[key]
            quiet = self._quiet.pop(key, None)
            if quiet is not None:
                quiet.set()

    async def prepare(
        self, request: ImageRequest, forwarded: bool = False, reader: object = None
    ) -> str | None:
        """Before the engine serves `request` here: get its image from the replica that has
        it, if that is another. Returns the owner to forward the request to instead, or
        None to serve it here. `reader`: the request's token (`serving`)."""
        key = request_key(request)
        digest = request.image_digest if request.image is not None else None
        # Bytes (or their digest) are a write, even of the picture held: the owner's alone,
        # so that its versions order every write (a copy restamped here would outrank the
        # lender's newer picture once the ring makes this replica the owner).
        writes = request.image is not None or request.image_digest is not None
        while True:
            if self._usable(key, digest, writes):
                return None
            ring = self.ring
            owner = ring.owner(ring_key(key)) if ring is not None else None
            # Sent on by a replica whose ring is behind ours: ours sent the image on.
            if (
                forwarded
                and owner not in (None, self.me)
                and not writes
                and not self.engine.pictures.holds(key)
                and await self._fetch(owner, key, digest)  # type: ignore[arg-type]
            ):
                return None
            if (
                forwarded
                and owner not in (None, self.me)
                and self.ownership.role(key) is Role.BORROWED
            ):
                # Sent on to a helper whose ring gives the image to its lender: what the
                # copy cannot answer (new bytes) goes on to the lender, like a helper's own.
                forwarded = False
            if owner == self.me and self.ownership.role(key) is Role.BORROWED:
                self._take_over(key)  # borrowed before the ring made it ours
            if forwarded and self._leaving_soon(key):
                forwarded = False  # about to leave for its owner, which will wait for it
            if self.ownership.role(key) is Role.SENDING and (forwarded or owner in (None, self.me)):
                # On its way out: neither answered from nor written to here (new bytes would
                # stay behind, newer than what arrives); once gone, whose it is decides.
                await self._until_sent(key)
                forwarded = False
                continue
            if forwarded or owner is None or owner == self.me:
                if key in self._stale and reader not in self._stale_readers.get(key, ()):
                    # A forgotten picture that earlier requests still read: not this one's.
                    await self._until_dropped(key)
                    continue
                if (
                    self.engine.pictures.holds(key)
                    and self.ownership.role(key) is not Role.RECEIVING
                ):
                    return None
                await self._await_incoming(key)
                if (
                    self.ring == ring
                    and owner == self.me
                    and self.ownership.role(key) is Role.BORROWED
                ):
                    continue  # another request's fetch brought a copy meanwhile: taken over
                if self.ring == ring and (
                    owner in (None, self.me)
                    or (
                        self.engine.pictures.holds(key)
                        and self.ownership.role(key) is not Role.BORROWED
                    )
                ):
                    return None
                # The ring changed while it waited (whose is the image now?), or a request sent
                # on here by a replica whose ring was behind waited in vain (its sender sent
                # the image elsewhere after all): it goes on to the owner on this ring. Each
                # hop follows a ring that disagrees with the previous replica's; rings agree
                # within moments, and the first hop's forward timeout bounds the chain.
                forwarded = False
                continue
            if not writes and await self._fetch(owner, key, digest):
                return None
            if self.ring != ring:
                continue  # the fetch outlasted the ring that named this owner
            logger.info("segmenter %s: %s goes on to its owner %s", self.me, key[1], owner)
            return owner

    async def _until_sent(self, key: ImageKey) -> None:
        """Wait (bounded) until `key` is no longer on its way out of this replica."""
        await self._while(lambda: self.ownership.role(key) is Role.SENDING)

    async def forward(self, owner: str, operation: str, request: ImageRequest) -> Any:
        """Serve `request` on its owner and return the owner's reply."""
        return await self.peers.forward(
            owner, operation, request, FORWARD_TIMEOUT_S, clock=self.ownership.clock.now
        )

    async def after(self, request: ImageRequest, embedding_cache: str) -> None:
        """After the engine served `request` here: an image this replica does not own goes
        to its owner."""
        key = request_key(request)
        if (
            self.ownership.role(key) is not Role.BORROWED
            and self.ring is not None
            and self.ring.owner(ring_key(key)) not in (None, self.me)
        ):
            await self._send_on_if_not_mine(key)

    async def _invalidate(self, key: ImageKey) -> None:
        """Borrowers of `key` forget their copies (acknowledged, each within the timeout and
        asked again once); requests for `key` served meanwhile wait for it too."""
        borrowers = self.ownership.changed(key)
        earlier = self._invalidating.get(key)
        if not borrowers:
            if earlier is not None:  # told by another request that stored new content
                await asyncio.shield(earlier)
            return
        version = self.ownership.clock.tick()
        told = asyncio.gather(
            *([earlier] if earlier is not None else []),
            *(self._forget_at(b, key, version) for b in sorted(borrowers)),
        )
        self._invalidating[key] = told

        def done(_: asyncio.Future) -> None:
            if self._invalidating.get(key) is told:
                del self._invalidating[key]

        told.add_done_callback(done)
        await asyncio.shield(told)  # the waiting requests' too, whoever hangs up

    async def _forget_at(self, borrower: str, key: ImageKey, version: int) -> None:
        """`borrower` forgets its copy of `key`, acknowledged; asked again once if the call
        failed while it still runs (a lost forget leaves it answering from the older
        picture until its next ring change)."""
        for attempt in range(FORGET_ATTEMPTS):
            if not await self.peers.alive(borrower):
                return
            try:
                await self.peers.call(borrower, "forget", key, version, timeout_s=self.timeout_s)
                return
            except Exception as error:
                logger.info(
                    "segmenter %s: forget of %s to %s failed (attempt %d): %r",
                    self.me,
                    key[1],
                    borrower,
                    attempt + 1,
                    error,
                )

    async def _fetch(self, owner: str, key: ImageKey, digest: str | None) -> bool:
        """Borrow the owner's picture of `key` (that picture, given `digest`); one fetch at a
        time per picture, in a task of its own: a client that hangs up cancels only its own
        wait. Returns whether this replica now holds what the request needs."""
        running = self._fetches.get((key, digest))
        if running is None:
            running = asyncio.get_running_loop().create_task(self._borrow(owner, key, digest))
            self._fetches[(key, digest)] = running
            running.add_done_callback(lambda _: self._fetches.pop((key, digest), None))
        return await asyncio.shield(running)

    async def _borrow(self, owner: str, key: ImageKey, digest: str | None) -> bool:
        self._sweep()
        started = time.perf_counter()
        try:
            if not await self.peers.alive(owner):
                raise ConnectionError(f"{owner} is gone")
            state = await self.peers.call(
                owner, "export", key, digest, self.me, timeout_s=self.timeout_s
            )
        except Exception as error:  # the owner will serve it itself
            logger.info("segmenter %s: fetch of %s failed: %r", self.me, key[1], error)
            state = None
        held = self.engine.pictures.image_version(key)
        if (
            state is not None
            and held is not None
            and held[1] < state.version
            and self.ownership.role(key) is Role.BORROWED
        ):
            # The lender holds a newer picture than the copy borrowed here: the forget that
            # should have said so was lost.
            self._drop_borrowed(key, held[0])
        if (
            state is not None
            and (not self.engine.pictures.holds(key) or key in self._stale)
            and self.ownership.borrow(key, owner, state.version)
        ):
            if await asyncio.to_thread(self.engine.pictures.adopt_image, key, state):
                if self.recorder is not None:
                    self.recorder.record_handoff("borrowed", time.perf_counter() - started)
            else:
                self.ownership.unborrow(key)
        return self._usable(key, digest)

    def _take_over(self, key: ImageKey) -> None:
        """The ring made this replica the owner of a copy it borrowed. Its lender owned it
        on an earlier ring and may not know yet (its ring behind ours): it may still answer
        from its picture, and will send it here. Until it does, or says it will not (a
        manifest for a ring that is not its own without the key, "settled"), or is gone,
        requests here wait, as for an image on its way: new bytes written here first would
        leave the lender answering from the older picture."""
        lender = self.ownership.peer(key)
        self.ownership.take_over(key)
        if lender is None or self.ring is None:
            return
        manifest = self._manifests.get(lender)
        if manifest is not None:
            version, listed = manifest
            theirs = Ring.of_version(version, self.ring.virtual_nodes)
            if key not in listed and theirs.owner(ring_key(key)) != lender:
                return  # it said: the image does not come from it
        self.ownership.announce(key, lender, now=self._now())

    def lost_borrowed_copy(self, request: ImageRequest) -> bool:
        """Whether the copy of the request's image borrowed here is gone (the cache pushed it
        out): then it counts as never borrowed, and the request may be prepared again."""
        key = request_key(request)
        if self.ownership.role(key) is not Role.BORROWED or self.engine.pictures.holds(key):
            return False
        self.ownership.unborrow(key)
        return True

    def _usable(self, key: ImageKey, digest: str | None, writes: bool = False) -> bool:
        """Whether a request for `key` (its picture `digest`, if given; `writes`: it sends
        bytes) can be served from the picture held here: not on its way out, not forgotten,
        no newer one coming, not a borrowed copy to write."""
        return (
            self.engine.pictures.holds(key, digest)
            and not (writes and self.ownership.role(key) is Role.BORROWED)
            and self.ownership.role(key) is not Role.SENDING
            and key not in self._stale
            and not self._awaits_newer(key)
            and not self._leaving_soon(key)
        )

    def _leaving_soon(self, key: ImageKey) -> bool:
        """Whether a hand-off waits to send `key` to the owner the current ring names."""
        return (
            key in self._draining
            and self.ring is not None
            and self.ring.owner(ring_key(key)) not in (None, self.me)
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def drain(self) -> None:
        """Wait until no hand-off work runs here (tests)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("hand-off task failed", exc_info=task.exception())
