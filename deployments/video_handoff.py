"""Video sessions that change owner replica: a segmenter replica's side of moving sessions
(`VideoHandoff`), beside the images' (`deployments.handoff`), over the same transport
(`Peers`), the same ring and the same logical clock (`deployments.ownership.Clock`: a session's
version is stamped from it when it starts, so the newer of two copies of a session id is the
one with the larger version, whichever arrives last).

When the ring changes (a scale event, or a graceful stop: a stopping replica leaves the ring):

- every replica **sends** the sessions it holds but no longer owns: first a manifest to every
  other replica of the new ring (the sessions headed there, maybe none), then each session as
  it is (`VideoSessions.export_session`: sam3's state with its frames, prompts and outputs;
  a propagation under way may finish first, within half the hand-off timeout, else it stops
  and its stream ends with `session_moved`), then "settled";
- a request for a session its replica owns but does not hold **waits** (at most
  `SAM3_HANDOFF_TIMEOUT_SECONDS`) for each earlier owner's manifest and, if the session is
  listed, for the session; then it is served there, or answered `404 session_not_found` if
  the session did not come (its replica crashed: nothing is sent; or it never existed);
- a request that reaches a replica that no longer owns its session (the caller's router had
  not heard of the new ring yet) is refused as "moving" (`SessionMovingError`) and the
  ingress sends it again (`deployments.video_owners`), so that it lands on the new owner.

Everything here runs on the replica's event loop; exporting and adopting run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from deployments.handoff import RING_HISTORY, _log_failure
from deployments.handoff_receiving import ALIVE_POLL_S
from deployments.owners import ServiceUnavailableError
from deployments.ownership import Clock, Ownership, Role
from deployments.peers import HandoffRecorder, Peers, reachable
from deployments.ring import Ring
from deployments.video_operations import VideoCall, session_ring_key
from sam3_core.video_handoff import SessionState
from sam3_core.video_sessions import SessionKey, VideoSessions

logger = logging.getLogger("ray.serve")

# What other replicas may call (`answer`); `deployments.peers` passes "video_adopt"'s
# sessions through Ray's object store.
CALLS = frozenset({"video_manifest", "video_settled", "video_adopt"})


class SessionMovingError(ServiceUnavailableError):
    """The session is not (or no longer) this replica's: the ingress sends the request again
    (to the owner its router then knows); after its bound, a 503 to retry."""

    code = "session_moving"

    def __init__(self, message: str, owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class VideoHandoff:
    """One replica's part in moving video sessions between owners (see the module's
    docstring). `sessions()` is the replica's `VideoSessions`, or None until its first video
    request builds them (then there is nothing to send)."""

    def __init__(
        self,
        me: str,
        peers: Peers,
        timeout_s: float,
        clock: Clock,
        sessions: Callable[[], VideoSessions | None],
        build: Callable[[], Awaitable[VideoSessions]],
        recorder: HandoffRecorder | None = None,
    ) -> None:
        self.me = me
        self.peers = peers
        self.timeout_s = timeout_s
        self.recorder = recorder
        self._sessions = sessions
        self._build = build  # the replica's sessions, built on first use
        self.ownership = Ownership(me, timeout_s)
        self.ownership.clock = clock  # the images' clock: one order per replica
        self.ring: Ring | None = None
        self._history: deque[Ring] = deque(maxlen=RING_HISTORY)
        self._without_me: Ring | None = None
        self._manifests: dict[str, tuple[str, frozenset[SessionKey]]] = {}
        self._settled: dict[str, str] = {}
        self._news = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    def _announce_news(self) -> None:
        self._news.set()
        self._news = asyncio.Event()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # Requests ----------------------------------------------------------------------------

    async def before(self, call: VideoCall) -> None:
        """Before `call` runs here: raise `SessionMovingError` if the session is another
        replica's; wait (bounded) for it if it is on its way here."""
        key = call.key
        if self.ownership.role(key) is Role.SENDING:
            raise _moving(call, self.ownership.peer(key))
        owner = self.ring.owner(session_ring_key(*key)) if self.ring is not None else None
        if owner not in (None, self.me):
            raise _moving(call, owner)
        sessions = self._sessions()
        if call.operation != "start_session" and (sessions is None or not sessions.holds(key)):
            await self._await_incoming(key)

    def after(self, call: VideoCall) -> None:
        """After `call` ran here: a closed session's copy still on its way is refused."""
        if call.operation == "close_session":
            self.ownership.forget(call.key, self.ownership.clock.tick(), self._now())

    def moved_away(self, call: VideoCall) -> SessionMovingError | None:
        """The refusal to send for a request that found no session here because it left
        meanwhile (None: it is not that)."""
        if self.ownership.role(call.key) is Role.SENDING:
            return _moving(call, self.ownership.peer(call.key))
        owner = self.ring.owner(session_ring_key(*call.key)) if self.ring is not None else None
        return _moving(call, owner) if owner not in (None, self.me) else None

    async def _await_incoming(self, key: SessionKey) -> None:
        if self.ownership.role(key) is Role.FORGOTTEN:
            return  # closed here: a copy on its way would be refused
        started = self._now()
        deadline = started + self.timeout_s
        done: set[str] = set()
        while True:
            sessions = self._sessions()
            if sessions is not None and sessions.holds(key):
                return
            sender = self._sender_of(key, done)
            if sender is None:
                return
            news = self._news
            remaining = deadline - self._now()
            if remaining <= 0 or not await self.peers.alive(sender):
                self.ownership.received(key, sender)
                done.add(sender)
                logger.info(
                    "segmenter %s: stopped waiting for video session %s from %s after %.1f s",
                    self.me, key[1], sender, self._now() - started,
                )  # fmt: skip
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(news.wait(), min(remaining, ALIVE_POLL_S))

    def _sender_of(self, key: SessionKey, done: set[str]) -> str | None:
        """The replica this one waits on for `key`: the one that announced it, else an
        earlier owner that has not yet said whether it sends it here."""
        if self.ownership.role(key) is Role.RECEIVING:
            sender = self.ownership.peer(key)
            if sender not in done:
                return sender
        if self.ring is None:
            return None
        rk = session_ring_key(*key)
        rings = [*reversed(self._history), self._without_me]
        owners = dict.fromkeys(r.owner(rk) for r in rings if r is not None)
        for sender in owners:
            if sender in (None, self.me) or sender in done:
                continue
            manifest = self._manifests.get(sender)
            if manifest is None:
                return sender
            version, listed = manifest
            their_ring = Ring.of_version(version, self.ring.virtual_nodes)
            if their_ring.owner(rk) == sender:
                return sender  # it still owns it on its ring: its next manifest will tell
            if key in listed and self._settled.get(sender) != version:
                return sender
        return None

    # Other replicas' calls ---------------------------------------------------------------

    async def answer(self, method: str, args: tuple) -> Any:
        if method not in CALLS:
            raise ValueError(f"no video hand-off call {method!r}")
        result = getattr(self, method)(*args)
        return await result if inspect.isawaitable(result) else result

    def video_manifest(
        self, sender: str, version: str, keys: Iterable[SessionKey], clock: int = 0
    ) -> None:
        self.ownership.clock.observe(clock)
        listed = frozenset((key[0], key[1]) for key in keys)
        self._manifests[sender] = (version, listed)
        if self._settled.get(sender) != version:
            sessions = self._sessions()
            for key in listed:
                if sessions is None or not sessions.holds(key):
                    self.ownership.announce(key, sender)
        self._announce_news()

    def video_settled(self, sender: str, version: str) -> None:
        self._settled[sender] = version
        for key in self.ownership.keys(Role.RECEIVING):
            if self.ownership.peer(key) == sender:
                self.ownership.received(key, sender)
        self._announce_news()

    async def video_adopt(
        self, sender: str, states: list[SessionState], clock: int = 0
    ) -> list[bool]:
        """Sessions `sender` no longer owns; returns which are kept (not one closed or
        started again here since: a newer version)."""
        self.ownership.clock.observe(clock)
        sessions = self._sessions() or await self._build()
        kept = []
        for state in states:
            key = (state.key[0], state.key[1])
            self.ownership.clock.observe(state.version)
            started = time.perf_counter()
            ok = not self.ownership.refuses(key, state.version) and await asyncio.to_thread(
                sessions.adopt_session, state
            )
            self.ownership.received(key)
            kept.append(ok)
            if ok and self.recorder is not None:
                self.recorder.record_handoff("received", time.perf_counter() - started)
            if not ok:
                logger.info(
                    "segmenter %s: video session %s from %s not kept", self.me, key[1], sender
                )
        self._announce_news()
        return kept

    # Ring changes and sending --------------------------------------------------------------

    def on_ring(self, ring: Ring) -> None:
        if ring == self.ring:
            return
        if self.ring is not None:
            self._history.append(self.ring)
        self.ring = ring
        self._without_me = ring.without(self.me)
        for sender in [s for s in self._manifests if s not in ring.replicas]:
            del self._manifests[sender]
            self._settled.pop(sender, None)
        self.ownership.sweep(lambda key: True, self._now())  # closed sessions' ttl
        self._announce_news()
        self._spawn(self._send_moved(ring))

    async def leave(self) -> None:
        """Before this replica stops: send every session it holds to its next owner."""
        if self.ring is not None and self.me in self.ring.replicas:
            self.on_ring(self.ring.without(self.me))
        pending = list(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.timeout_s)
            for task in late:
                task.cancel()

    async def _send_moved(self, ring: Ring) -> None:
        sessions = self._sessions()
        moves: dict[str, list[SessionKey]] = defaultdict(list)
        for key in sessions.keys() if sessions is not None else ():
            owner = ring.owner(session_ring_key(*key))
            if owner not in (None, self.me):
                moves[owner].append(key)
        others = sorted(ring.replicas - {self.me})
        answers = [reachable(self.peers, t, self.timeout_s) for t in others]
        reached = await asyncio.gather(*answers)
        targets = [t for t, ok in zip(others, reached, strict=True) if ok]
        for target in sorted(set(moves) - set(targets)):  # another code version: lost
            for key in moves.pop(target):
                sessions.close_session(key)  # type: ignore[union-attr]
        clock = self.ownership.clock.now
        await asyncio.gather(
            *(self._notify(t, "video_manifest", self.me, ring.version, moves.get(t, []), clock)
              for t in targets)
        )  # fmt: skip
        await asyncio.gather(*(self._deliver(t, keys) for t, keys in moves.items()))
        await asyncio.gather(
            *(self._notify(t, "video_settled", self.me, ring.version) for t in targets)
        )

    async def _deliver(self, target: str, keys: list[SessionKey]) -> None:
        """Each session to `target`, one call each (a session may be large); forgotten
        here once sent, delivered or not."""
        sessions = self._sessions()
        for key in keys if sessions is not None else ():
            self.ownership.sending(key, target)
            try:
                started = time.perf_counter()
                state = await asyncio.to_thread(sessions.export_session, key, self.timeout_s / 2)
                if state is None:
                    continue
                clock = self.ownership.clock.now
                kept = await self.peers.call(
                    target, "video_adopt", self.me, [state], clock, timeout_s=self.timeout_s
                )
                if kept == [True] and self.recorder is not None:
                    self.recorder.record_handoff("sent", time.perf_counter() - started)
            except Exception as error:  # the session is lost
                logger.warning(
                    "segmenter %s: video session %s to %s failed (%s): dropped",
                    self.me, key[1], target, type(error).__name__,
                )  # fmt: skip
            finally:
                self.ownership.sent(key)

    async def _notify(self, target: str, method: str, *args: Any) -> None:
        try:
            await self.peers.notify(target, method, *args, timeout_s=self.timeout_s)
        except Exception as error:  # the receiver's wait is bounded
            logger.info("segmenter %s: %s to %s failed: %r", self.me, method, target, error)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def drain(self) -> None:
        """Wait until no hand-off work runs here (tests)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))


def _moving(call: VideoCall, owner: str | None) -> SessionMovingError:
    return SessionMovingError(
        f"video session {call.session_id!r} is moving to another replica (a scale event); "
        "retry shortly",
        owner,
    )
