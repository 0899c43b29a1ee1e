"""The sending half of a replica's hand-off (`deployments.handoff.Handoff`, whose docstring
tells the whole): on a ring change, the manifest and then the images a replica no longer
owns go to their new owners; on a graceful stop, all of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from deployments.ownership import Ownership, Role
from deployments.peers import HandoffRecorder, Peers
from deployments.ring import Ring, ring_key
from sam3_core.engine import Segmenter
from sam3_core.pictures import ImageKey

logger = logging.getLogger("ray.serve")

# Images per hand-off call: each call is a few messages, whatever it carries.
BATCH_IMAGES = 8
# Longest a replica waits for a new peer to read its hand-off board before counting it as of
# another code version (whose board is another).
REACH_WAIT_S = 2.0


class Sending:
    """Mixed into `Handoff`: its state is `Handoff`'s."""

    engine: Segmenter
    me: str
    peers: Peers
    timeout_s: float
    recorder: HandoffRecorder | None
    ring: Ring | None
    ownership: Ownership

    # Ring changes, and sending -----------------------------------------------------------

    def on_ring(self, ring: Ring) -> None:
        """The replica set changed: send away what this replica no longer owns."""
        if ring == self.ring:
            return
        if self.ring is not None:
            self._history.append(self.ring)
        self.ring = ring
        self._without_me = ring.without(self.me)
        for sender in [s for s in self._manifests if s not in ring.replicas]:
            del self._manifests[sender]
            self._settled.pop(sender, None)
        self._sweep()
        self._announce_news()
        logger.info("segmenter %s: ring of %d replicas", self.me, len(ring.replicas))
        self._spawn(self._send_moved(ring))

    async def leave(self) -> None:
        """Before this replica stops: send every image it holds to its owner."""
        if self.ring is not None and self.me in self.ring.replicas:
            self.on_ring(self.ring.without(self.me))  # Serve's routers have dropped us already
        pending = list(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.timeout_s)
            for task in late:
                task.cancel()

    async def _send_moved(self, ring: Ring) -> None:
        moves: dict[str, list[ImageKey]] = defaultdict(list)
        underway: dict[str, list[ImageKey]] = defaultdict(list)
        # Images of requests running here first (they may be embedding them), then the
        # cached ones, most recently used first.
        for key in dict.fromkeys([*self._serving, *self.engine.pictures.image_keys()]):
            owner = ring.owner(ring_key(key))
            if self.ownership.role(key) is Role.BORROWED:
                lender = self.ownership.peer(key)
                if owner == self.me:
                    self.ownership.take_over(key)  # ours now
                elif owner != lender:  # the lender no longer owns it, nor tracks this copy
                    self.ownership.unborrow(key)
                    self.engine.pictures.drop_image(key)
                continue
            if self.ownership.role(key) is Role.SENDING:
                if owner == self.ownership.peer(key):  # on its way there already: listed
                    underway[owner].append(key)
                continue
            if owner is not None and owner != self.me:
                moves[owner].append(key)
        # Replicas of another code version (a redeploy replacing this one) read another board
        # and may run another model: nothing goes to them, and what they now own is dropped.
        others = sorted(ring.replicas - {self.me})
        reachable = await asyncio.gather(*(self._reachable(t) for t in others))
        targets = [t for t, ok in zip(others, reachable, strict=True) if ok]
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
        await asyncio.gather(
            *(
                self._notify(t, "manifest", self.me, ring.version, moves[t] + underway[t], clock)
                for t in targets
            )
        )
        batches = [
            (target, keys[i : i + BATCH_IMAGES])
            for target, keys in moves.items()
            for i in range(0, len(keys), BATCH_IMAGES)
        ]
        await asyncio.gather(*(self._deliver(target, keys) for target, keys in batches))
        await asyncio.gather(*(self._notify(t, "settled", self.me, ring.version) for t in targets))

    async def _reachable(self, target: str) -> bool:
        """Whether `target` reads this replica's board. A replica that has just started may
        not have read it yet when the new ring arrives: asked again for a short while."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(REACH_WAIT_S, self.timeout_s / 4)
        while not await self.peers.alive(target):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def _deliver(self, target: str, keys: list[ImageKey]) -> None:
        """Send images to `target` in one call, then forget them here, delivered or not."""
        if self._sending is None:
            self._sending = asyncio.Semaphore(self._concurrency)
        async with self._sending:
            await self._until_served(keys)
            keys = [k for k in keys if self.ownership.role(k) is not Role.BORROWED]
            for key in keys:
                await self._tell_borrowers(self.ownership.sending(key, target), key)
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
            if self.recorder is not None:
                # What one image cost, the call's time shared among the images it carried.
                each = (time.perf_counter() - started) / len(states)
                for kept in accepted:
                    if kept:
                        self.recorder.record_handoff("sent", each)

    async def _until_served(self, keys: list[ImageKey]) -> None:
        """Wait (bounded) until no request for `keys` runs here."""
        waits = [
            self._quiet.setdefault(key, asyncio.Event()).wait()
            for key in keys
            if key in self._serving
        ]
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self.timeout_s)

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
        """`method` on `target`, waiting for it to be done (within the timeout)."""
        try:
            await self.peers.call(target, method, *args, timeout_s=self.timeout_s)
        except Exception as error:  # gone or too slow: its own ring change drops its copies
            logger.info("segmenter %s: %s to %s failed: %r", self.me, method, target, error)
