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
import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any

from deployments.handoff_sending import Sending
from deployments.peers import HandoffRecorder, Peers
from deployments.ring import Ring, request_key, ring_key
from sam3_core.calls import ImageRequest
from sam3_core.engine import ImageKey, Segmenter
from sam3_core.handoff import ImageState

logger = logging.getLogger("ray.serve")

# A forwarded request may wait in the owner's queue and embed there: the proxy's own bound.
FORWARD_TIMEOUT_S = 120.0
# Earlier rings a replica remembers, to know who owned an image before.
RING_HISTORY = 4
# Routers and replicas learn a new replica set within milliseconds of each other: an image
# that reached a replica whose ring says another owns it goes on only if that still holds
# after this long (the receiver's ring may have been the one behind).
RING_SETTLE_S = 1.0
# What other replicas may call (`answer`).
CALLS = frozenset({"manifest", "settled", "adopt", "export", "forget"})


class Handoff(Sending):
    """One replica's part in moving images between owners (see the module's docstring)."""

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
        self._without_me: Ring | None = None
        # Helper side: borrowed key -> the owner it came from; per key, the `sent_at` of the
        # owner's newer content (an older borrowed copy arriving late is refused) and when
        # that was heard.
        self.borrowed: dict[ImageKey, str] = {}
        self._forgotten: dict[ImageKey, tuple[float, float]] = {}
        # Owner side: who holds a borrowed copy of each key.
        self._lent: dict[ImageKey, set[str]] = defaultdict(set)
        # Receiving side: manifests by (sender, ring version); images announced and not yet
        # here, with their sender; (sender, version) whose manifest will not come.
        self._manifests: dict[tuple[str, str], frozenset[ImageKey]] = {}
        self._manifest_events: dict[tuple[str, str], asyncio.Event] = {}
        self._announced: dict[ImageKey, tuple[str, asyncio.Event]] = {}
        self._given_up: set[tuple[str, str]] = set()
        self._fetches: dict[tuple[ImageKey, str | None], asyncio.Future[bool]] = {}
        # Requests running here, by key; who waits for a key to have none.
        self._serving: Counter[ImageKey] = Counter()
        self._quiet: dict[ImageKey, asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()
        self._concurrency = concurrency
        self._sending: asyncio.Semaphore | None = None

    # Receiving ---------------------------------------------------------------------------

    async def answer(self, method: str, args: tuple) -> Any:
        """Another replica's call (`Peers.call`)."""
        if method not in CALLS:
            raise ValueError(f"no hand-off call {method!r}")
        result = getattr(self, method)(*args)
        return await result if inspect.isawaitable(result) else result

    def manifest(self, sender: str, version: str, keys: Iterable[ImageKey]) -> None:
        """`sender` announces the images it is about to send here for ring `version`."""
        listed = frozenset(tuple(key) for key in keys)
        self._manifests[(sender, version)] = listed  # type: ignore[assignment]
        for key in listed:
            if key not in self._announced and not self.engine.pictures.holds(key):  # type: ignore[arg-type]
                self._announced[key] = (sender, asyncio.Event())  # type: ignore[index]
        self._manifest_event(sender, version).set()

    def settled(self, sender: str, version: str) -> None:
        """`sender` is done sending for `version`: stop waiting for what did not come."""
        for key in self._manifests.get((sender, version), ()):
            announced = self._announced.get(key)
            if announced is not None and announced[0] == sender:
                del self._announced[key]
                announced[1].set()

    async def adopt(self, sender: str, states: list[tuple[ImageKey, ImageState]]) -> list[bool]:
        """Images `sender` no longer owns; returns which are kept."""
        states = [(tuple(key), state) for key, state in states]  # type: ignore[misc]
        before = {key: self.engine.pictures.image_version(key) for key, _ in states}
        started = time.perf_counter()
        accepted = await asyncio.to_thread(
            lambda: [self.engine.pictures.adopt_image(key, state) for key, state in states]
        )
        each = (time.perf_counter() - started) / len(states)
        for (key, state), kept in zip(states, accepted, strict=True):
            announced = self._announced.pop(key, None)
            if announced is not None:
                announced[1].set()
            if not kept:
                continue
            if self.recorder is not None:
                self.recorder.record_handoff("received", each)
            old = before[key]
            if old is not None and old[0] != state.content_digest:
                await self._invalidate(key, state.sent_at)
            self._spawn(self._send_on_if_not_mine(key))
        return accepted

    # Helpers' side: fetching from the owner, forgetting ---------------------------------

    async def export(self, key: ImageKey, content_digest: str | None, borrower: str) -> Any:
        """This replica's picture of `key` for `borrower` (None when it has no such one)."""
        key = tuple(key)  # type: ignore[assignment]
        state = await asyncio.to_thread(self.engine.pictures.export_image, key, content_digest)
        if state is not None:
            self._lent[key].add(borrower)
        return state

    def forget(self, key: ImageKey, sent_at: float) -> None:
        """The owner has newer content of `key` (sent at `sent_at`): drop a borrowed copy,
        and refuse an older one still on its way (for as long as a fetch may take)."""
        key = tuple(key)  # type: ignore[assignment]
        now = time.monotonic()
        self._forgotten = {
            k: (t, at) for k, (t, at) in self._forgotten.items() if now - at < self.timeout_s
        }
        previous = self._forgotten.get(key, (-math.inf, now))[0]
        self._forgotten[key] = (max(previous, sent_at), now)
        if self.borrowed.pop(key, None) is not None:
            self.engine.pictures.drop_image(key)

    # Requests ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(
        self, request: ImageRequest, forwarded: bool = False
    ) -> AsyncIterator[str | None]:
        """Around a request served here: first its image, from the replica that has it if
        that is another (`prepare`); yields the owner to forward the request to instead, or
        None to serve it here. While the request runs, its image is not sent away (it may
        be embedding it: the image goes once that is done)."""
        key = request_key(request)
        self._serving[key] += 1
        try:
            yield await self.prepare(request, forwarded)
        finally:
            self._serving[key] -= 1
            if not self._serving[key]:
                del self._serving[key]
                quiet = self._quiet.pop(key, None)
                if quiet is not None:
                    quiet.set()

    async def prepare(self, request: ImageRequest, forwarded: bool = False) -> str | None:
        """Before the engine serves `request` here: get its image from the replica that has
        it, if that is another. Returns the owner to forward the request to instead, or
        None to serve it here."""
        key = request_key(request)
        digest = request.image_digest if request.image is not None else None
        if self.engine.pictures.holds(key, digest):
            return None
        owner = self.ring.owner(ring_key(key)) if self.ring is not None else None
        if forwarded or owner is None or owner == self.me:
            if not self.engine.pictures.holds(key):
                await self._await_incoming(key)
            return None
        if await self._fetch(owner, key, digest):
            return None
        logger.info("segmenter %s: %s goes on to its owner %s", self.me, key[1], owner)
        return owner

    async def forward(self, owner: str, operation: str, request: ImageRequest) -> Any:
        """Serve `request` on its owner and return the owner's reply."""
        return await self.peers.forward(owner, operation, request, FORWARD_TIMEOUT_S)

    async def after(self, request: ImageRequest, embedding_cache: str) -> None:
        """After the engine served `request` here: borrowers forget an older picture, and an
        image this replica does not own goes to its owner."""
        key = request_key(request)
        if embedding_cache == "miss" and self._lent.get(key):
            version = self.engine.pictures.image_version(key)
            if version is not None:
                await self._invalidate(key, version[1])
        if (
            key not in self.borrowed
            and self.ring is not None
            and self.ring.owner(ring_key(key)) not in (None, self.me)
        ):
            self._spawn(self._send_on_if_not_mine(key))

    async def _invalidate(self, key: ImageKey, sent_at: float) -> None:
        borrowers = self._lent.pop(key, set())
        await asyncio.gather(*(self._notify(b, "forget", key, sent_at) for b in sorted(borrowers)))

    async def _send_on_if_not_mine(self, key: ImageKey) -> None:
        """An image reached this replica though its ring names another owner (routers or
        replicas disagreed for a moment): once rings have settled, it goes on to its owner
        if that still holds."""
        await asyncio.sleep(RING_SETTLE_S)
        if self.ring is None or key in self.borrowed or not self.engine.pictures.holds(key):
            return
        owner = self.ring.owner(ring_key(key))
        if owner is not None and owner != self.me:
            await self._deliver(owner, [key])

    async def _fetch(self, owner: str, key: ImageKey, digest: str | None) -> bool:
        """Borrow the owner's picture of `key` (that picture, given `digest`); one fetch at a
        time per picture. Returns whether this replica now holds what the request needs."""
        running = self._fetches.get((key, digest))
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._fetches[(key, digest)] = future
        try:
            started = time.perf_counter()
            try:
                state = await self.peers.call(
                    owner, "export", key, digest, self.me, timeout_s=self.timeout_s
                )
            except Exception as error:  # the owner will serve it itself
                logger.info("segmenter %s: fetch of %s failed: %r", self.me, key[1], error)
                state = None
            if (
                state is not None
                and self._forgotten.get(key, (-math.inf, 0.0))[0] <= state.sent_at
                and await asyncio.to_thread(self.engine.pictures.adopt_image, key, state)
            ):
                self.borrowed[key] = owner
                if self.recorder is not None:
                    self.recorder.record_handoff("borrowed", time.perf_counter() - started)
            future.set_result(self.engine.pictures.holds(key, digest))
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            del self._fetches[(key, digest)]
        return future.result()

    async def _await_incoming(self, key: ImageKey) -> None:
        """Wait (bounded) for `key` if a replica that owned it before is sending it here."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout_s
        if key not in self._announced and self.ring is not None:
            version = self.ring.version
            for sender in self._previous_owners(key):
                if (sender, version) in self._given_up:
                    continue
                await self._await_manifest(sender, version, deadline)
                if key in self._manifests.get((sender, version), ()):
                    break
        announced = self._announced.get(key)
        if announced is not None:
            sender, arrived = announced
            if not await self._wait(arrived, sender, deadline):
                self._stop_waiting_for(sender)
            if not self.engine.pictures.holds(key):
                logger.info(
                    "segmenter %s: %s was announced by %s but did not arrive in %.1f s",
                    self.me,
                    key[1],
                    sender,
                    loop.time() - started,
                )

    def _stop_waiting_for(self, sender: str) -> None:
        """`sender` is gone or too slow: nothing more it announced is awaited."""
        for key, (announcer, arrived) in list(self._announced.items()):
            if announcer == sender:
                del self._announced[key]
                arrived.set()

    def _previous_owners(self, key: ImageKey) -> list[str]:
        """Replicas that owned `key` on the rings this replica saw before, and on the
        current ring without it (what owned it before this replica joined)."""
        rk = ring_key(key)
        owners: list[str] = []
        rings = [*reversed(self._history), self._without_me]
        for ring in rings:
            owner = ring.owner(rk) if ring is not None else None
            if owner is not None and owner != self.me and owner not in owners:
                owners.append(owner)
        return owners

    async def _await_manifest(self, sender: str, version: str, deadline: float) -> None:
        if (sender, version) in self._manifests:
            return
        if not await self._wait(self._manifest_event(sender, version), sender, deadline):
            self._given_up.add((sender, version))

    async def _wait(self, event: asyncio.Event, sender: str, deadline: float) -> bool:
        """Wait for `event` until `deadline`, or until `sender` is found gone."""
        loop = asyncio.get_running_loop()
        while not event.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self.peers.alive(sender):
                return event.is_set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 1.0))
        return True

    def _manifest_event(self, sender: str, version: str) -> asyncio.Event:
        return self._manifest_events.setdefault((sender, version), asyncio.Event())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def drain(self) -> None:
        """Wait until no hand-off work runs here (tests)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("hand-off task failed", exc_info=task.exception())
