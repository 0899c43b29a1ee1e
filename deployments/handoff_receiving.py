"""The receiving half of a replica's hand-off (`deployments.handoff.Handoff`, whose docstring
tells the whole): the messages of replicas sending images here (manifest, coming, adopt,
settled), images that reached this replica though another owns them (sent on), and the
bounded wait of a request for an image on its way here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from deployments.ownership import Ownership, Role
from deployments.peers import HandoffRecorder, Peers
from deployments.ring import Ring, ring_key
from sam3_core.engine import Segmenter
from sam3_core.handoff import ImageState
from sam3_core.pictures import ImageKey

logger = logging.getLogger("ray.serve")

# Routers and replicas learn a new replica set within milliseconds of each other: an image
# that reached a replica whose ring says another owns it goes on only if that still holds
# after this long (the receiver's ring may have been the one behind).
RING_SETTLE_S = 1.0
# How often a request waiting for an image checks that its sender still runs.
ALIVE_POLL_S = 1.0
# How long a replica that may have owned an image on a ring this one never saw, and has said
# nothing, is waited on: long enough for its manifest to arrive after a ring change.
UNANNOUNCED_WAIT_S = 2.0


class Receiving:
    """Mixed into `Handoff`: its state is `Handoff`'s."""

    engine: Segmenter
    me: str
    peers: Peers
    timeout_s: float
    recorder: HandoffRecorder | None
    ring: Ring | None
    ownership: Ownership
    _history: Any
    _first_ring: Ring | None
    _manifests: dict[str, tuple[str, frozenset[ImageKey]]]
    _relaying: set[str]
    _upstream: dict[str, dict[ImageKey, frozenset[str]]]
    _settled: dict[str, str]
    _coming: dict[ImageKey, dict[str, float]]
    _waited_out: set[tuple[ImageKey, str]]
    _news: asyncio.Event
    _leaving: bool

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _announce_news(self) -> None:
        """Wake every request waiting for an image: something it waits on may have come."""
        self._news.set()
        self._news = asyncio.Event()

    def manifest(
        self,
        sender: str,
        version: str,
        keys: Iterable[ImageKey],
        clock: int = 0,
        relaying: bool = False,
        upstream: Iterable[tuple[ImageKey, Iterable[str]]] = (),
    ) -> None:
        """`sender` announces the images it is about to send here for its ring `version`
        (`relaying`: and maybe others, that reach it before it says "settled"); `upstream`:
        of those on their way to it, the replicas it awaits each from."""
        self.ownership.clock.observe(clock)
        listed = frozenset(tuple(key) for key in keys)
        self._manifests[sender] = (version, listed)  # type: ignore[assignment]
        self._upstream[sender] = {
            tuple(key): frozenset(senders) - {self.me}  # type: ignore[misc]
            for key, senders in upstream
        }
        if relaying:
            self._relaying.add(sender)
        else:
            self._relaying.discard(sender)
        if self._settled.get(sender) != version:  # else it came after its "settled"
            for key in listed:
                if not self.engine.pictures.holds(key):  # else it came before its manifest
                    self.ownership.announce(key, sender, now=self._now())
        self._announce_news()

    def coming(
        self,
        sender: str,
        keys: Iterable[ImageKey],
        clock: int = 0,
        versions: Iterable[int] | None = None,
    ) -> None:
        """`sender` holds `keys` (their pictures at `versions`) though its ring makes this
        replica their owner (they reached it late, or by a router behind): they will come,
        whatever manifests said. A picture held here that is older waits for them: the
        sender may hold new bytes a client sent through it and was answered for."""
        self.ownership.clock.observe(clock)
        keys = [tuple(key) for key in keys]
        versions = list(versions) if versions is not None else [0] * len(keys)
        for key, version in zip(keys, versions, strict=True):
            held = self.engine.pictures.image_version(key)  # type: ignore[arg-type]
            if held is None or held[1] < version:
                if held is not None and self.ownership.role(key) is Role.BORROWED:
                    self._drop_borrowed(key, held[0])  # its lender's copy is older too
                now = self._now()
                self.ownership.announce(key, sender, version, now)
                self._coming.setdefault(key, {})[sender] = now  # type: ignore[index]
            elif self.ownership.role(key) is Role.SENDING:  # it comes back once sent
                self._coming.setdefault(key, {})[sender] = self._now()  # type: ignore[index]
        self._announce_news()

    def _awaits_newer(self, key: ImageKey) -> bool:
        """Whether a newer picture of `key` than the one held here was announced (`coming`)."""
        if self.ownership.role(key) is not Role.RECEIVING:  # the common case: no peek
            return False
        held = self.engine.pictures.image_version(key)
        return held is not None and self.ownership.awaits_newer(key, held[1])

    def not_coming(self, sender: str, keys: Iterable[ImageKey]) -> None:
        """`sender` will not send `keys` after all (announced by `coming`)."""
        for key in keys:
            self._received(tuple(key), sender)  # type: ignore[arg-type]
        self._announce_news()

    def _received(self, key: ImageKey, sender: str | None = None) -> None:
        """`key` arrived (or will not come from `sender`): its receiving ends (for it)."""
        self.ownership.received(key, sender)
        senders = self._coming.get(key)
        if senders is not None:
            if sender is None:
                senders.clear()
            senders.pop(sender, None)
            if not senders or self.ownership.role(key) is not Role.RECEIVING:
                del self._coming[key]

    def settled(self, sender: str, version: str) -> None:
        """`sender` is done sending for `version`: stop waiting for what did not come."""
        self._settled[sender] = version
        manifest = self._manifests.get(sender)
        still = manifest[1] if manifest is not None and manifest[0] != version else frozenset()
        for key in self.ownership.keys(Role.RECEIVING):
            # A later manifest's keys may still come, and those it relays (`coming`).
            if key not in still and sender not in self._coming.get(key, ()):
                self._received(key, sender)
        self._announce_news()

    async def adopt(
        self, sender: str, states: list[tuple[ImageKey, ImageState]], clock: int = 0
    ) -> list[bool]:
        """Images `sender` no longer owns; returns which are kept."""
        self.ownership.clock.observe(clock)
        states = [(tuple(key), state) for key, state in states]  # type: ignore[misc]
        for _, state in states:
            self.ownership.clock.observe(state.version)
        before = {key: self.engine.pictures.image_version(key) for key, _ in states}
        started = time.perf_counter()
        accepted = await asyncio.to_thread(
            lambda: [self.engine.pictures.adopt_image(key, state) for key, state in states]
        )
        each = (time.perf_counter() - started) / len(states)
        onward: list[ImageKey] = []
        for (key, state), kept in zip(states, accepted, strict=True):
            if not kept:
                self._received(key, sender)
                continue
            if self.recorder is not None:
                self.recorder.record_handoff("received", each)
            old = before[key]
            if old is not None and old[0] != state.content_digest:
                await self._invalidate(key)
            onward.append(key)
        # The owner of images that are not ours hears they will come from here before they
        # count as arrived: this replica's own hand-off waits for them (`_until_relayed`),
        # and its "settled" must not reach that owner before its "coming".
        owners = await asyncio.gather(*(self._announce_onward(key) for key in onward))
        # Each sender's arrival ends only its own announcement: another replica that
        # announced the image may hold a newer picture (two owners' rings disagreed).
        for key in onward:
            self._received(key, sender)
        self._announce_news()
        for key, owner in zip(onward, owners, strict=True):
            if owner is not None:
                self._spawn(self._send_on_later(key, owner))
        return accepted

    async def _send_on_if_not_mine(self, key: ImageKey) -> None:
        """An image reached this replica though its ring names another owner (routers or
        replicas disagreed for a moment): the owner hears at once that it will come
        (`coming`, acknowledged), so that a request there waits for it rather than answering
        404 or embedding it again; once rings have settled, it goes on to its owner if that
        still holds (in a task of its own), else the owner hears it will not come."""
        owner = await self._announce_onward(key)
        if owner is not None:
            self._spawn(self._send_on_later(key, owner))

    async def _announce_onward(self, key: ImageKey) -> str | None:
        """The owner hears that `key` will come from here (`coming`, acknowledged), if it is
        not this replica's: returns that owner."""
        if self.ring is None or self.ownership.role(key) is Role.BORROWED:
            return None
        owner = self.ring.owner(ring_key(key))
        if owner is None or owner == self.me:
            return None
        held = self.engine.pictures.image_version(key)
        versions = [held[1] if held is not None else 0]
        await self._call_quietly(
            owner, "coming", self.me, [key], self.ownership.clock.now, versions
        )
        return owner

    async def _send_on_later(self, key: ImageKey, announced_to: str) -> None:
        if not self._leaving:
            await asyncio.sleep(RING_SETTLE_S)
        owner = self.ring.owner(ring_key(key)) if self.ring is not None else None
        if (
            owner not in (None, self.me)
            and self.ownership.role(key) not in (Role.BORROWED, Role.SENDING)
            and self.engine.pictures.holds(key)
        ):
            await self._deliver(owner, [key])  # type: ignore[arg-type]
            if owner == announced_to:
                return
        await self._notify(announced_to, "not_coming", self.me, [key])

    async def _await_incoming(self, key: ImageKey) -> None:
        """Wait (bounded) for `key` while a replica that owned it before may send it here:
        until it is here, its sender says it will not come or is gone, or the timeout."""
        started = self._now()
        deadline = started + self.timeout_s
        done: set[str] = set()
        ring = self.ring
        while not self.engine.pictures.holds(key) or self.ownership.role(key) is Role.RECEIVING:
            if self.ring != ring:
                return  # the caller asks again whose the image is
            sender = self._sender_of(key, done)
            news = self._news
            remaining = deadline - self._now()
            if sender is None:
                if remaining <= 0 or not self._behind(key):
                    return
                # Another replica's ring, newer than ours, gives the image to a third:
                # ours will follow within moments.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(news.wait(), remaining)
                continue
            if self._only_ranked_after(key, sender) or self._only_by_a_leaver(key, sender):
                remaining = min(remaining, started + UNANNOUNCED_WAIT_S - self._now())
            if remaining <= 0 or not await self.peers.alive(sender):
                if remaining > 0:  # a relay died: those it awaited the image from send it
                    for source in self._upstream.get(sender, {}).get(key, ()):
                        if source not in done and await self.peers.alive(source):
                            self.ownership.announce(key, source, now=self._now())
                self._received(key, sender)
                done.add(sender)
                self._waited_out.add((key, sender))  # later requests do not wait again
                logger.info(
                    "segmenter %s: stopped waiting for %s from %s after %.1f s",
                    self.me,
                    key[1],
                    sender,
                    self._now() - started,
                )
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(news.wait(), min(remaining, ALIVE_POLL_S))

    def _only_by_a_leaver(self, key: ImageKey, sender: str) -> bool:
        """Whether `sender` is waited on only because its latest manifest's ring gives `key`
        to a replica that has left ours (the image may come back through it, or through
        the leaver): a short wait (`UNANNOUNCED_WAIT_S`), as the replica that left may be
        one that crashed, and `sender` with it (a lost node), which Ray may report alive for
        a while."""
        manifest = self._manifests.get(sender)
        if manifest is None or self.ring is None or sender in self.ownership.senders(key):
            return False
        version, listed = manifest
        their_ring = Ring.of_version(version, self.ring.virtual_nodes)
        return (
            key not in listed
            and sender not in self._relaying
            and their_ring.owner(ring_key(key)) not in (sender, *self.ring.replicas)
        )

    def _only_ranked_after(self, key: ImageKey, sender: str) -> bool:
        """Whether `sender` is waited on only because it ranks after this replica on the
        current ring, though it joined after this one (so every ring that has it has this
        one, ranked first for `key`: it cannot have owned `key`), and it announced nothing,
        sent no manifest and owned `key` on no ring seen here. Such a replica says nothing,
        so it is given `UNANNOUNCED_WAIT_S`, not the whole hand-off timeout (a deployment's
        first replicas otherwise held each new image 30 s for those started after them)."""
        rk = ring_key(key)
        return (
            self._first_ring is not None
            and sender not in self._first_ring.replicas
            and sender not in self.ownership.senders(key)
            and sender not in self._manifests
            and all(ring.owner(rk) != sender for ring in self._history)
        )

    def _behind(self, key: ImageKey) -> bool:
        """Whether a manifest came for a ring with a replica this one never saw (so newer
        than its own: names are never reused) that makes another replica `key`'s owner."""
        if self.ring is None:
            return False
        known = self.ring.replicas.union(*(r.replicas for r in self._history))
        for version, _ in self._manifests.values():
            theirs = Ring.of_version(version, self.ring.virtual_nodes)
            if theirs.replicas - known and theirs.owner(ring_key(key)) not in (None, self.me):
                return True
        return False

    def _sender_of(self, key: ImageKey, done: set[str]) -> str | None:
        """The replica this one waits on for `key`: the one that announced it, else an
        earlier owner that has not yet said (in a manifest for a ring that no longer makes
        it the owner, whichever ring that is) whether it sends it here."""
        for sender in sorted(self.ownership.senders(key) - done):
            return sender
        rk = ring_key(key)
        for sender in self._previous_owners(key):
            if sender in done or (key, sender) in self._waited_out:
                continue
            manifest = self._manifests.get(sender)
            if manifest is None:
                return sender
            version, listed = manifest
            their_ring = Ring.of_version(version, self.ring.virtual_nodes)
            if their_ring.owner(rk) == sender:
                return sender  # it still owns it on its ring: its next manifest will tell
            if self._owner_after(sender, rk, their_ring):
                return sender  # its manifest predates a ring that gave it the image
            # Not settled: what it lists may still come, and what its ring sends to a replica
            # that has left ours (it never saw that one go) may come back through it.
            if self._settled.get(sender) != version and (
                key in listed
                or sender in self._relaying
                or their_ring.owner(rk) not in self.ring.replicas
            ):
                return sender
        return None

    def _owner_after(self, sender: str, rk: str, theirs: Ring) -> bool:
        """Whether a ring seen here after `theirs` (the ring of `sender`'s latest manifest)
        made `sender` the owner: the image may have reached it since (sent by a replica
        already on that ring), and its manifest for that ring, not yet come, will tell."""
        seen = list(self._history)
        if theirs not in seen:
            return False
        return any(ring.owner(rk) == sender for ring in seen[seen.index(theirs) + 1 :])

    def _previous_owners(self, key: ImageKey) -> list[str]:
        """Replicas that owned `key` on the rings this replica saw before, and those that
        may have owned it before this replica joined: every replica of the current ring
        ranked after this one for `key` (rings this replica never saw, e.g. the one
        between a scale-out it was not part of and the next one, gave it to one of them)."""
        rk = ring_key(key)
        owners: list[str] = []
        for ring in reversed(self._history):
            owner = ring.owner(rk)
            if owner is not None and owner != self.me and owner not in owners:
                owners.append(owner)
        for ring in (self.ring, self._first_ring):  # the first: some may have left since
            if ring is not None:
                ranked = ring.ranked(rk)
                after = ranked[ranked.index(self.me) + 1 :] if self.me in ranked else ranked
                owners += [owner for owner in after if owner not in owners]
        return owners
