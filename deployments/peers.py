"""How a segmenter replica reaches the other replicas of its deployment for hand-offs: through
Ray, and never through the replicas' request slots.

A replica at `max_ongoing_requests` is exactly one that may be waiting for images (its
requests wait for them after a scale event), so hand-off messages must not queue behind
requests as Serve handle calls do: measured with handle calls, a new owner's slots filled with
requests waiting for manifests that could not get a slot, and they timed out. Instead:

- `HandoffBoard`, a deployment-scoped actor (Serve's `deployment_actors`: created with the
  deployment, shared by its replicas, deleted with it), keeps one mailbox per replica, for
  small messages only;
- payloads (images with their logits, replies) go through Ray's object store: the sender
  `ray.put`s them and posts the reference, the receiver fetches it;
- each replica long-polls its mailbox and answers on its event loop (`Handoff.answer`).

A request a helper sends on to its image's owner is a client request: it goes through Serve's
handle to that replica (`OwnerRouter`'s `to_replica` sessions), with its slots and queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import ray
from ray import serve
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve._private.constants import SERVE_NAMESPACE

from deployments.router import to_replica

logger = logging.getLogger("ray.serve")

BOARD = "handoff_board"  # its name among the Segmenter's deployment_actors
POLL_S = 10.0
# Calls whose arguments, and calls whose replies, carry an image (`ImageState`) or a video
# session (`SessionState`).
BY_REFERENCE = frozenset({"adopt", "video_adopt"})
REPLY_BY_REFERENCE = frozenset({"export"})


class Peers(Protocol):
    """How one replica reaches the others (`deployments.peers.RayPeers` on Ray)."""

    async def call(self, replica: str, method: str, *args: Any, timeout_s: float) -> Any:
        """`Handoff.answer(method, args)` on replica `replica`; raises on failure or after
        `timeout_s`."""
        ...

    async def forward(
        self, replica: str, operation: str, request: Any, timeout_s: float, clock: int = 0
    ) -> Any:
        """Serve `request` (operation `operation`) on `replica` as a client request there;
        `clock`: the sender's logical clock (`deployments.ownership.Clock`)."""
        ...

    async def notify(self, replica: str, method: str, *args: Any, timeout_s: float) -> None:
        """`Handoff.answer(method, args)` on replica `replica`, without waiting for it."""
        ...

    async def alive(self, replica: str) -> bool:
        """Whether the replica's process still runs (a stopping replica does)."""
        ...


# Longest a replica waits for a new peer to read its hand-off board before counting it as of
# another code version (whose board is another).
REACH_WAIT_S = 2.0


async def reachable(peers: Peers, target: str, timeout_s: float) -> bool:
    """Whether `target` reads this replica's board. A replica that has just started may not
    have read it yet when the new ring arrives: asked again for a short while."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(REACH_WAIT_S, timeout_s / 4)
    while not await peers.alive(target):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


class HandoffRecorder(Protocol):
    def record_handoff(self, direction: str, seconds: float) -> None:
        """One image moved: "sent" (pushed to its new owner), "received", or "borrowed"
        (fetched from its owner by a helper); `seconds` from export to adoption."""
        ...


class HandoffBoard:
    """Mailboxes of one deployment's replicas. Messages nobody took within `ttl_s` (their
    addressee is gone) are dropped.

    Serve keeps one board per code version of the deployment: replicas of an older version
    (a redeploy replacing them, perhaps with another model) never exchange images with the
    new ones, and `knows` tells a replica which others read this board."""

    def __init__(self, ttl_s: float = 120.0) -> None:
        self.ttl_s = ttl_s
        self._boxes: dict[str, list[tuple[float, tuple]]] = defaultdict(list)
        self._arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._readers: dict[str, float] = {}

    async def knows(self, replica: str) -> bool:
        """Whether `replica` read its mailbox here lately."""
        seen = self._readers.get(replica)
        return seen is not None and time.monotonic() - seen < self.ttl_s

    async def post(self, to: str, message: tuple) -> None:
        now = time.monotonic()
        for name in list(self._boxes):
            kept = [(t, m) for t, m in self._boxes[name] if now - t < self.ttl_s]
            if kept:
                self._boxes[name] = kept
            else:
                del self._boxes[name]
        self._boxes[to].append((now, message))
        self._arrived[to].set()

    async def take(self, me: str, wait_s: float) -> list[tuple]:
        """`me`'s messages, waiting up to `wait_s` for one."""
        self._readers[me] = time.monotonic()
        if not self._boxes.get(me):
            arrived = self._arrived[me]
            arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(arrived.wait(), wait_s)
        return [message for _, message in self._boxes.pop(me, [])]


Answer = Callable[[str, tuple], Awaitable[Any]]


class RayPeers:
    """The other replicas of this replica's deployment (`deployments.handoff.Peers`)."""

    def __init__(self, replica_id: ReplicaID, answer: Answer) -> None:
        self.me = replica_id.unique_id
        self.deployment_id: DeploymentID = replica_id.deployment_id
        self._answer = answer
        self._board = serve.get_deployment_actor(BOARD)
        self._pending: dict[str, asyncio.Future] = {}
        self.handle = serve.get_deployment_handle(
            self.deployment_id.name, self.deployment_id.app_name
        )
        # Its router starts now, and with it the replica-set updates this replica learns the
        # ring from (deployments.ring).
        self.handle._init()
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def call(self, replica: str, method: str, *args: Any, timeout_s: float) -> Any:
        reply_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[reply_id] = future
        try:
            body = await _body((method, args), by_reference=method in BY_REFERENCE)
            await asyncio.wait_for(
                self._board.post.remote(replica, ("call", self.me, reply_id, body)), timeout_s
            )
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._pending.pop(reply_id, None)

    async def notify(self, replica: str, method: str, *args: Any, timeout_s: float) -> None:
        body = await _body((method, args), by_reference=False)
        await asyncio.wait_for(
            self._board.post.remote(replica, ("note", self.me, "", body)), timeout_s
        )

    async def forward(
        self, replica: str, operation: str, request: Any, timeout_s: float, clock: int = 0
    ) -> Any:
        response = self.handle.options(session_id=to_replica(replica)).handoff_forwarded.remote(
            operation, request, clock
        )
        try:
            return await asyncio.wait_for(_result(response), timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise

    async def alive(self, replica: str) -> bool:
        """A replica of this code version (it reads this board) whose actor still runs."""
        try:
            if not await self._board.knows.remote(replica):
                return False
        except Exception:  # the board is being recreated: ask Ray alone
            pass
        name = ReplicaID(replica, self.deployment_id).to_full_id_str()
        try:
            await asyncio.to_thread(ray.get_actor, name, SERVE_NAMESPACE)
        except ValueError:  # no such actor: it has exited
            return False
        return True

    async def _poll(self) -> None:
        while True:
            try:
                messages = await self._board.take.remote(self.me, POLL_S)
            except Exception as error:  # the board is being recreated: look it up again
                logger.warning("segmenter %s: hand-off board unavailable (%r)", self.me, error)
                await asyncio.sleep(1.0)
                with contextlib.suppress(ValueError):
                    self._board = serve.get_deployment_actor(BOARD)
                continue
            for message in messages:
                asyncio.get_running_loop().create_task(self._receive(*message))

    async def _receive(self, kind: str, sender: str, reply_id: str, body: tuple) -> None:
        try:
            content = await _content(body)
        except Exception as error:  # its owner (the sender) is gone
            logger.info("segmenter %s: message from %s lost (%r)", self.me, sender, error)
            return
        if kind == "reply":
            future = self._pending.get(reply_id)
            if future is not None and not future.done():
                ok, value = content
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            return
        method, args = content
        try:
            reply = (True, await self._answer(method, args))
        except Exception as error:
            reply = (False, error)
        if kind != "call":
            return
        body = await _body(reply, by_reference=method in REPLY_BY_REFERENCE)
        with contextlib.suppress(Exception):  # the caller's wait is bounded
            await self._board.post.remote(sender, ("reply", self.me, reply_id, body))


async def _body(content: Any, by_reference: bool) -> tuple:
    """A message's content: inline (small), or an object-store reference (an image); a
    reference nested in a list is not resolved by the board, which never holds images."""
    if not by_reference:
        return ("inline", content)
    return ("ref", [await asyncio.to_thread(ray.put, content)])


async def _content(body: tuple) -> Any:
    how, value = body
    return value if how == "inline" else await value[0]


async def _result(response: Any) -> Any:
    return await response
