"""The sending half of a replica's hand-off (`deployments.handoff.Handoff`, whose docstring
tells the whole): on a ring change, the manifest and then the images a replica no longer
owns go to their new owners; on a graceful stop, all of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from typing import Any

from deployments.ownership import Ownership, Role
from deployments.peers import HandoffRecorder, Peers, reachable
from deployments.ring import Ring, ring_key
from sam3_core.engine import Segmenter
from sam3_core.pictures import ImageKey

logger = logging.getLogger("ray.serve")

# Images per hand-off call: each call is a few messages, whatever it carries.
BATCH_IMAGES = 8


class Sending:
    """Mixed into `Handoff`: its state is `Handoff`'s."""

    engine: Segmenter
    me: str
    peers: Peers
    timeout_s: float
    recorder: HandoffRecorder | None
    ring: Ring | None
    ownership: Ownership
    _first_ring: Ring | None
    _history: deque[Ring]
    _coming: dict[ImageKey, dict[str, float]]
    _waited_out: set[tuple[ImageKey, str]]
    _manifests: dict[str, tuple[str, frozenset[ImageKey]]]
    _relaying: set[str]
    _upstream: dict[str, dict[ImageKey, frozenset[str]]]
    _settled: dict[str, str]
    _news: asyncio.Event
    _serving: dict[ImageKey, set[object]]
    _draining: Counter[ImageKey]
    _quiet: dict[ImageKey, asyncio.Event]
    _tasks: set[asyncio.Task]
    _moving: asyncio.Task | None
    _leaving: bool
    _concurrency: int
    _sending: asyncio.Semaphore | None

    # Ring changes, and sending -----------------------------------------------------------

    def on_ring(self, ring: Ring) -> None:
        """The replica set changed: send away what this replica no longer owns."""
        if ring == self.ring:
            return
        if self.ring is not None:
            self._history.append(self.ring)
        self.ring = ring
        self._waited_out.clear()
        if self._first_ring is None:
            self._first_ring = ring
        known = ring.replicas.union(*(r.replicas for r in self._history))
        for sender in [s for s in self._manifests if s not in known]:
            del self._manifests[sender]
            self._settled.pop(sender, None)
            self._relaying.discard(sender)
            self._upstream.pop(sender, None)
        self._sweep()
        self._announce_news()
        logger.info("segmenter %s: ring of %d replicas", self.me, len(ring.replicas))
        self._moving = self._spawn(self._send_moved(ring, self._moving))

    async def leave(self) -> None:
        """Before this replica stops: send every image it holds to its owner (and those
        that reach it meanwhile, at once: `_leaving`)."""
        self._leaving = True
        if self.ring is not None and self.me in self.ring.replicas:
            self.on_ring(self.ring.without(self.me))  # Serve's routers have dropped us already
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while self._tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(list(self._tasks), timeout=remaining)
        for task in list(self._tasks):
            task.cancel()

    async def _send_moved(self, ring: Ring, before: asyncio.Task | None) -> None:
        moves: dict[str, list[ImageKey]] = defaultdict(list)
        underway: dict[str, list[ImageKey]] = defaultdict(list)
        # Images on their way here that are no longer ours: they go on once here (`adopt`).
        relayed = [
            k for k in self.ownership.keys(Role.RECEIVING) if not self.engine.pictures.holds(k)
        ]
        for key in relayed:
            owner = ring.owner(ring_key(key))
            if owner is not None and owner != self.me:
                underway[owner].append(key)
        # Images of requests running here first (they may be embedding them), then the
        # cached ones, most recently used first.
        for key in dict.fromkeys([*self._serving, *self.engine.pictures.image_keys()]):
            owner = ring.owner(ring_key(key))
            if self.ownership.role(key) is Role.BORROWED:
                lender = self.ownership.peer(key)
                if owner == self.me:
                    self._take_over(key)  # ours now
                elif owner != lender:  # the lender no longer owns it, nor tracks this copy
                    held = self.engine.pictures.image_version(key)
                    if held is None:
                        self.ownership.unborrow(key)
                    else:  # a request that fetched it may be about to read it
                        self._drop_borrowed(key, held[0])
                continue
            if self.ownership.role(key) is Role.SENDING:
                # On its way (there, or to a replica that will send it on): listed.
                if owner is not None and owner != self.me:
                    underway[owner].append(key)
                continue
            if owner is not None and owner != self.me:
                moves[owner].append(key)
        # Replicas of another code version (a redeploy replacing this one) read another board
        # and may run another model: nothing goes to them, and what they now own is dropped.
        others = sorted(ring.replicas - {self.me})
        answers = [reachable(self.peers, t, self.timeout_s) for t in others]
        reached = await asyncio.gather(*answers)
        targets = [t for t, ok in zip(others, reached, strict=True) if ok]
        if unreachable := [k for t in sorted(set(moves) - set(targets)) for k in moves.pop(t)]:
            logger.info(
                "segmenter %s: %d image(s) owned by replicas of another version: dropped",
                self.me,
                len(unreachable),
            )
            for key in unreachable:
                await self._tell_borrowers(self.ownership.changed(key), key)
                self.engine.pictures.drop_image(key)
        if moves:
            logger.info(
                "segmenter %s: handing %d image(s) to %d replica(s)",
                self.me,
                sum(map(len, moves.values())),
                len(moves),
            )
        clock = self.ownership.clock.now
        relaying = bool(relayed or self._unsettled_leavers(ring))
        upstream = {k: sorted(self.ownership.senders(k)) for k in relayed}
        await asyncio.gather(
            *(
                self._notify(
                    t,
                    "manifest",
                    self.me,
                    ring.version,
                    moves[t] + underway[t],
                    clock,
                    relaying,
                    [(k, upstream[k]) for k in underway[t] if k in upstream],
                )
                for t in targets
            )
        )
        batches = [
            (target, keys[i : i + BATCH_IMAGES])
            for target, keys in moves.items()
            for i in range(0, len(keys), BATCH_IMAGES)
        ]
        await asyncio.gather(*(self._deliver(target, keys) for target, keys in batches))
        if before is not None:  # images it sends reach their receivers first (`adopt`)
            await asyncio.wait([before], timeout=self.timeout_s)
        # Replicas that left (a scale-in by two at once) wait for the "settled" of each other
        # leaver: this one sends them nothing more (its ring has neither), so they hear it
        # now, not after this one's own wait for them (each waited the whole timeout).
        await asyncio.gather(
            *(self._notify(t, "settled", self.me, ring.version) for t in self._left(ring))
        )
        # With no replica of this version on the ring beside this one (an app deleted, `serve
        # shutdown`, a redeploy's old replicas, one replica left) there is no one to relay
        # images to, nor to say "settled" to: leavers waiting for each other's "settled" here
        # would each wait out the timeout (30 s and a forced kill each, on Ray).
        if targets:
            # And until what it listed as on its way from here (sent by an earlier ring
            # change, or sent on) has left: "settled" ends the receivers' waits for it.
            outgoing = [k for keys in underway.values() for k in keys if k not in relayed]
            await self._until_relayed(ring, relayed, outgoing)
        await asyncio.gather(*(self._notify(t, "settled", self.me, ring.version) for t in targets))

    async def _deliver(self, target: str, keys: list[ImageKey]) -> None:
        """Send images to their owner in one call per owner, then forget them here,
        delivered or not. `target`: their owner when the ring changed; requests for them
        may run here for a while first, and by then the ring may have changed again."""
        if self._sending is None:
            self._sending = asyncio.Semaphore(self._concurrency)
        async with self._sending:
            self._draining.update(keys)
            try:
                await self._until_served(keys)
                owners: dict[str, list[ImageKey]] = defaultdict(list)
                for key in keys:
                    owner = self.ring.owner(ring_key(key)) if self.ring is not None else target
                    if (
                        owner not in (None, self.me)
                        and self.ownership.role(key) not in (Role.BORROWED, Role.SENDING)
                        and self.engine.pictures.holds(key)
                    ):
                        owners[owner].append(key)  # type: ignore[index]
                # All marked before the first call: a request arriving meanwhile must not
                # take a key of a later batch as held here (and embed it again once it has
                # gone). The new owner, if it borrowed a copy, is not told to forget it: it
                # adopts the picture sent by version, and may hold a newer one a client sent.
                borrowers = {
                    owner: [(key, self.ownership.sending(key, owner) - {owner}) for key in owned]
                    for owner, owned in owners.items()
                }
            finally:
                self._draining.subtract(keys)
                for key in keys:
                    if self._draining[key] <= 0:
                        del self._draining[key]
            for owner, owned in owners.items():
                await self._send_batch(owner, owned, borrowers[owner])

    async def _send_batch(
        self,
        target: str,
        keys: list[ImageKey],
        borrowers: list[tuple[ImageKey, frozenset[str]]],
    ) -> None:
        """`keys` (marked as sending, with their `borrowers`) to `target`, now their owner,
        in one call; forgotten here however it ends."""
        for key, told in borrowers:
            await self._tell_borrowers(told, key)
        started = time.perf_counter()
        exported = await asyncio.to_thread(
            lambda: [(key, self.engine.pictures.export_image(key)) for key in keys]
        )
        states = [(key, state) for key, state in exported if state is not None]
        for key, state in exported:
            if state is None:  # evicted meanwhile
                self.ownership.sent(key)
        if not states:
            return
        try:
            accepted = await self.peers.call(
                target,
                "adopt",
                self.me,
                states,
                self.ownership.clock.now,
                timeout_s=self.timeout_s,
            )
        except Exception as error:  # any failure: the images are lost
            logger.warning(
                "segmenter %s: hand-off of %d image(s) to %s failed (%s): dropped",
                self.me,
                len(states),
                target,
                type(error).__name__,
            )
            accepted = [False] * len(states)
        finally:
            for key, state in states:
                self.engine.pictures.drop_image(key, state.content_digest)
                self.ownership.sent(key)
                # Announced as coming back while it left (`coming`): awaited now.
                for sender, since in self._coming.get(key, {}).items():
                    self.ownership.announce(key, sender, now=since)
            self._announce_news()
        if self.recorder is not None:
            # What one image cost, the call's time shared among the images it carried.
            each = (time.perf_counter() - started) / len(states)
            for kept in accepted:
                if kept:
                    self.recorder.record_handoff("sent", each)

    def _left(self, ring: Ring) -> list[str]:
        """Replicas that left: on an earlier ring, not on `ring`."""
        return sorted(set().union(*(r.replicas for r in self._history)) - ring.replicas - {self.me})

    def _unsettled_leavers(self, ring: Ring) -> list[str]:
        """Replicas that left and have not yet said "settled" for a ring without them:
        images of theirs may still come here."""
        return [
            name
            for name in self._left(ring)
            if (settled := self._settled.get(name)) is None or name in settled.split(",")
        ]

    async def _until_relayed(
        self, ring: Ring, keys: list[ImageKey], outgoing: Sequence[ImageKey] = ()
    ) -> None:
        """Wait (bounded) until none of `keys` is on its way here, none of `outgoing` on its
        way from here, and every replica that left has settled (or is gone): what reaches
        this replica is then sent on first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            leavers = [r for r in self._unsettled_leavers(ring) if await self.peers.alive(r)]
            busy = any(self.ownership.role(k) is Role.RECEIVING for k in keys) or any(
                self.ownership.role(k) is Role.SENDING for k in outgoing
            )
            remaining = deadline - loop.time()
            if not (leavers or busy) or remaining <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._news.wait(), min(remaining, 1.0))

    async def _until_served(self, keys: list[ImageKey]) -> None:
        """Wait (bounded) until no request for `keys` runs here, those that came while it
        waited included (the caller marks them as sending before its next await)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            busy = [key for key in keys if key in self._serving]
            remaining = deadline - loop.time()
            if not busy or remaining <= 0:
                return
            quiet = self._quiet.setdefault(busy[0], asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(quiet.wait(), remaining)

    async def _tell_borrowers(self, borrowers: frozenset[str], *keys: ImageKey) -> None:
        """Borrowers forget their copies of `keys` (their owner is about to change, and the
        next one will not know them), acknowledged, before the keys go."""
        if borrowers and keys:
            version = self.ownership.clock.tick()
            await asyncio.gather(
                *(
                    self._call_quietly(b, "forget", key, version)
                    for b in sorted(borrowers)
                    for key in keys
                )
            )

    async def _notify(self, target: str, method: str, *args: Any) -> None:
        try:
            await self.peers.notify(target, method, *args, timeout_s=self.timeout_s)
        except Exception as error:  # the receiver's wait is bounded
            logger.info("segmenter %s: %s to %s failed: %r", self.me, method, target, error)

    async def _call_quietly(self, target: str, method: str, *args: Any) -> None:
        """`method` on `target`, waiting for it to be done (within the timeout); nothing
        if `target` is gone (a call to it would wait the whole timeout)."""
        try:
            if not await self.peers.alive(target):
                return
            await self.peers.call(target, method, *args, timeout_s=self.timeout_s)
        except Exception as error:  # gone or too slow: its own ring change drops its copies
            logger.info("segmenter %s: %s to %s failed: %r", self.me, method, target, error)
