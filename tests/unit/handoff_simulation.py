"""A deterministic simulation of the hand-off: the real `SegmenterReplica._serve`, `Handoff`,
`Ownership`, `Ring` and `Pictures` code, on a virtual-time event loop, under one seeded
scheduler that decides every order of events.

What is simulated (never the protocol itself):
- time: `SimLoop` jumps to the next timer instead of sleeping; a schedule of a minute of
  virtual time runs in tens of milliseconds;
- the model: `SimEngine` keeps real `Pictures` with a one-number embedding per picture; its
  work takes a random virtual time, and finishes even when the client hung up (as a worker
  thread does); some requests fail after their embed (an injected CUDA OOM);
- the transport (`SimPeers`, the `Peers` of `deployments.peers`): messages arrive late, out
  of order, twice, or (in lossy schedules) never; calls time out as on Ray;
- Ray Serve: replicas are added, removed gracefully (their `leave`) or killed; each replica
  and the ingress learn ring changes at their own times, and may skip a version; the
  ingress sometimes routes by an older ring, and with `load_factor` sends clicks to a
  helper; clients click by id, send bytes (new or the same again, digest first or in
  full) and hang up.

Checked after every answer (`Checker`), and the ownership invariants after every answer:
- no stale picture: never an answer older than a picture acknowledged before the request
  was sent (unless a write sent after that one, or never acknowledged, gave it);
- no 404 for an image a live replica holds as its own, and no second embed of a picture a
  live replica holds as its own or is sending (lossy schedules excepted: a lost hand-off
  message loses images by design);
- no request waits on a hand-off once its image is there (within `PROMPT_S`), nor longer
  than the hand-off timeout and a few message delays;
- bookkeeping bounded (`Ownership.check`, and the hand-off's other tables).

Run one seed: `SIM_SEED=123 python -m pytest tests/unit/test_handoff_simulation.py -k one_seed
-s` (every fault on), or `python -m tests.unit.handoff_simulation 123 [profile]` (prints the
schedule's events; profile `scale-out`, `scale-in-out` or `all`, the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from dataclasses import dataclass
from typing import Any

import deployments.segmenter as segmenter_module
from deployments.handoff import Handoff
from deployments.operations import EMBED, SEGMENT
from deployments.ownership import Role
from deployments.ring import Ring, ring_key
from deployments.segmenter import SegmenterReplica
from sam3_core.calls import EmbedRequest, SegmentRequest
from sam3_core.errors import ImageBytesNeededError, ImageNotCachedError, Sam3Error
from sam3_core.images import content_id
from tests.unit.handoff_history import Checker, Op
from tests.unit.handoff_stand_ins import (
    InjectedFailure,
    NullMetrics,
    SimEngine,
    SimLoop,
    _inline,
    sim_run,
)

HANDOFF_TIMEOUT_S = 3.0
# A request waiting for an image that is already here, for longer than this, is a violation.
PROMPT_S = 0.05
IDS = ("cat", "dog", "owl")
PICTURES = tuple(f"picture-{n}".encode() for n in range(3))


@dataclass
class Faults:
    """How the transport misbehaves in one schedule."""

    late: float = 0.05  # chance a message takes up to `late_s` instead of milliseconds
    late_s: float = 1.0
    twice: float = 0.05
    lost: float = 0.0


class SimPeers:
    """`deployments.peers.Peers` between the replicas of a `World`, through its scheduler."""

    def __init__(self, world: World, me: str) -> None:
        self.world = world
        self.me = me

    def _delay(self) -> float:
        faults, rng = self.world.faults, self.world.rng
        return (
            rng.uniform(0.0, faults.late_s)
            if rng.random() < faults.late
            else rng.uniform(0.0005, 0.01)
        )

    def _reachable(self, replica: str) -> bool:
        return self.world.running(replica) and self.world.running(self.me)

    async def _deliver(self, replica: str, method: str, args: tuple) -> Any:
        """`method` answered on `replica` after a delay; raises if the message is lost."""
        await asyncio.sleep(self._delay())
        if not self._reachable(replica) or self.world.rng.random() < self.world.faults.lost:
            raise ConnectionError(f"message {method} to {replica} lost")
        target = self.world.replicas[replica]
        # Not pickled (tensors are slow to pickle): `test_handoff.py`'s peers copy messages.
        if self.world.rng.random() < self.world.faults.twice:
            self.world.spawn(_quietly(target.handoff.answer(method, args)))
        result = await target.handoff.answer(method, args)
        await asyncio.sleep(self._delay())
        if not self._reachable(replica) or self.world.rng.random() < self.world.faults.lost:
            raise ConnectionError(f"reply to {method} from {replica} lost")
        return result

    async def call(self, replica: str, method: str, *args: Any, timeout_s: float) -> Any:
        self.world.log(f"{self.me}->{replica} {method}")
        try:
            return await asyncio.wait_for(self._deliver(replica, method, args), timeout_s)
        except ConnectionError:
            if self.world.states.get(replica) == "stopped":
                # An actor that exited: Ray fails calls to it at once.
                raise ConnectionError(f"{method} to {replica}: it stopped") from None
            # A lost message, or a replica on a lost node (Ray notices that late): only the
            # timeout tells.
            await asyncio.sleep(timeout_s)
            raise TimeoutError(f"{method} to {replica}") from None

    async def notify(self, replica: str, method: str, *args: Any, timeout_s: float) -> None:
        self.world.log(f"{self.me}->{replica} {method} (note)")
        self.world.spawn(_quietly(self._deliver(replica, method, args)))

    async def forward(
        self, replica: str, operation: str, request: Any, timeout_s: float, clock: int = 0
    ) -> Any:
        self.world.log(f"{self.me}->{replica} forward {operation}")
        await asyncio.sleep(self._delay())
        if not self._reachable(replica):
            raise ConnectionError(f"{replica} is gone")
        target = self.world.replicas[replica]
        reply = await asyncio.wait_for(
            target.handoff_forwarded(operation, request, clock), timeout_s
        )
        await asyncio.sleep(self._delay())
        if not self._reachable(replica):  # it stopped meanwhile: on Ray, no reply comes
            raise ConnectionError(f"{replica} stopped before it answered")
        return reply

    async def alive(self, replica: str) -> bool:
        return self.world.running(replica)


async def _quietly(work: Any) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):  # lost: the protocol's bound
        await work


class World:
    """The replicas, rings, clients and faults of one schedule, driven by one seed."""

    def __init__(self, seed: int, events: int = 60, off: frozenset[str] = frozenset()) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.events = events
        self.off = off  # faults left out of this run (`FAULTS`)
        rng = self.rng
        self.lossy = rng.random() < 0.2 and "lost" not in off
        late = 0.0 if "late" in off else rng.choice([0.0, 0.05, 0.2])
        self.faults = Faults(late=late, lost=0.02 if self.lossy else 0.0)
        self.load_factor = rng.random() < 0.5 and "helpers" not in off
        self.fail_rate = rng.choice([0.0, 0.1])
        self.cache_entries = rng.choice([2, 8])
        self.replicas: dict[str, SegmenterReplica] = {}
        self.states: dict[str, str] = {}  # running, leaving, stopped, dead
        self.truth: Ring = Ring(())
        self.generation = 0
        self.heard: dict[str, int] = {}  # the last ring generation each replica heard of
        self.ingress_rings: list[Ring] = []
        self.checker = Checker(self.lossy)
        self.evictions_at_send: dict[int, dict[str, int]] = {}
        self.trace: list[str] = []
        self._tasks: set[asyncio.Task] = set()
        self._names = (f"r{n}" for n in range(100))

    def log(self, line: str) -> None:
        self.trace.append(f"{asyncio.get_running_loop().time():9.4f} {line}")

    def spawn(self, work: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def running(self, name: str) -> bool:
        return self.states.get(name) in ("running", "leaving")

    def violation(self, what: str) -> None:
        self.log(f"VIOLATION {what}")
        self.checker.violations.append(what)

    # Replicas and rings ------------------------------------------------------------------

    def add_replica(self) -> None:
        name = next(self._names)
        replica = object.__new__(SegmenterReplica)
        replica.engine = SimEngine(self.rng, self.cache_entries, self.fail_rate)
        replica.replica = name
        replica._pool = None
        replica.metrics = NullMetrics()
        replica.handoff = Handoff(replica.engine, name, SimPeers(self, name), HANDOFF_TIMEOUT_S)
        replica.engine.on_embed = lambda key, digest: self.check_embed(name, key, digest)
        replica._left = True
        self.replicas[name] = replica
        self.states[name] = "running"
        self.log(f"add {name}")
        self.change_ring(Ring(sorted(self.truth.replicas | {name})))
        # Assumed of Ray: a replica's own router has the set that added it before the
        # ingress routes to it (the production code does not wait for a first ring: with
        # the benchmark's other routers, none ever comes).
        self.heard[name] = self.generation
        replica.handoff.on_ring(self.truth)

    def change_ring(self, ring: Ring) -> None:
        """The controller's new replica set reaches each replica's router, and the ingress's,
        after its own delay; a router that hears of a newer one first skips this one."""
        self.truth = ring
        self.generation += 1
        for name in sorted(self.replicas):
            if self.running(name):
                self.spawn(self._tell(name, ring, self.generation))
        self.spawn(self._tell_ingress(ring, self.generation))

    async def _tell(self, name: str, ring: Ring, generation: int) -> None:
        """Serve's long poll: in order, but a router that is behind may skip a version."""
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        if not self.running(name) or self.heard.get(name, 0) >= generation:
            return
        # Never the first: a replica's router subscribes before the replica is running, and
        # its first snapshot is the one that added it.
        first = name not in self.heard
        skip = "skip" not in self.off and self.rng.random() < 0.5
        if first or generation == self.generation or not skip:
            self.heard[name] = generation
            self.log(f"{name} ring {ring.version}")
            self.replicas[name].handoff.on_ring(ring)

    async def _tell_ingress(self, ring: Ring, generation: int) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        if self.heard.get("ingress", 0) < generation:
            self.heard["ingress"] = generation
            self.ingress_rings.append(ring)

    def remove_replica(self, crash: bool) -> None:
        running = [n for n in sorted(self.replicas) if self.states[n] == "running"]
        if len(running) < 2:
            return
        name = self.rng.choice(running)
        self.log(f"{'kill' if crash else 'remove'} {name}")
        if crash:
            self.states[name] = "dead"
        else:
            self.states[name] = "leaving"
            self.spawn(self._leave(name))
        self.change_ring(self.truth.without(name))

    async def _leave(self, name: str) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, 0.5))  # Serve stops it after the routers
        await self.replicas[name].handoff.leave()
        if self.states[name] == "leaving":
            self.states[name] = "stopped"
            self.log(f"stopped {name}")

    # Clients -----------------------------------------------------------------------------

    def route(self, image_id: str) -> str | None:
        """The replica the ingress sends a request to: the owner on its ring (sometimes an
        older ring), or with `load_factor` now and then the next replica (a helper)."""
        rings = self.ingress_rings[-3:] or [self.truth]
        old = "old-ingress" not in self.off and self.rng.random() < 0.2
        ring = self.rng.choice(rings) if old else rings[-1]
        ranked = [r for r in ring.ranked(ring_key(("", image_id))) if self.running(r)]
        if not ranked:
            return None
        if self.load_factor and len(ranked) > 1 and self.rng.random() < 0.3:
            return ranked[1]
        return ranked[0]

    async def client(self) -> None:
        rng = self.rng
        image_id = rng.choice(IDS)
        kind = rng.choices(["click", "bytes", "digest", "embed"], [6, 2, 1, 1])[0]
        data = rng.choice(PICTURES) if kind != "click" else None
        digest = content_id(data) if data is not None else None
        op = Op(image_id, asyncio.get_running_loop().time(), digest, holders=self.holders(image_id))
        self.evictions_at_send[id(op)] = self.evictions(image_id)
        self.checker.ops.append(op)
        hang_up = rng.random() < 0.05
        work = self.spawn(self._request(op, kind, data, digest))
        if hang_up:
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            work.cancel()
        with _suppress_all():
            await work

    async def _request(self, op: Op, kind: str, data: bytes | None, digest: str | None) -> None:
        operation = EMBED if kind == "embed" else SEGMENT
        cls = EmbedRequest if kind == "embed" else SegmentRequest
        first = dict(image=None, image_id=op.image_id, image_digest=digest)
        if kind in ("bytes", "embed"):
            first["image"] = data
        try:
            reply = await self._send(operation, cls(**first))
            if isinstance(reply, ImageBytesNeededError):
                reply = await self._send(operation, cls(**{**first, "image": data}))
        except asyncio.CancelledError:
            op.outcome = "hung up"
            raise
        except InjectedFailure:
            op.outcome = "failed"
            return
        except (ConnectionError, TimeoutError) as error:
            op.outcome = f"unreachable ({error})"
            return
        now = asyncio.get_running_loop().time()
        if isinstance(reply, ImageNotCachedError):
            op.outcome = "404"
            # Held when the request was sent and now, and not evicted by its cache between.
            before = self.evictions_at_send.get(id(op), {})
            now_evicted = self.evictions(op.image_id)
            holders = [
                name
                for name in sorted(set(op.holders) & set(self.holders(op.image_id)))
                if before.get(name) == now_evicted.get(name)
            ]
            if holders and not self.lossy:
                self.violation(f"404 for {op.image_id} at {now:.3f}, held by {holders}")
        elif isinstance(reply, Sam3Error):
            op.outcome = reply.code
        else:
            op.acked, op.answer, op.outcome = now, reply.body.decode(), "ok"
            if (stale := self.checker.stale(op)) is not None:
                self.violation(f"stale answer: {stale}")
        if now - op.sent > HANDOFF_TIMEOUT_S * 2 + 4 * self.faults.late_s + 1.0:
            self.violation(f"{op.image_id}: request took {now - op.sent:.2f} s")
        self.check_bookkeeping()

    async def _send(self, operation: Any, request: Any) -> Any:
        target = self.route(request.image_id)
        if target is None:
            raise ConnectionError("no replica")
        self.log(f"client {operation.name} {request.image_id} -> {target}")
        replica = self.replicas[target]
        reply = await replica._serve(operation, request)
        if not self.running(target):
            raise ConnectionError(f"{target} died")
        return reply

    def evictions(self, image_id: str) -> dict[str, int]:
        """How often each replica's cache evicted `image_id` (an eviction answers 404)."""
        return {name: r.engine.evicted[("", image_id)] for name, r in self.replicas.items()}

    def holders(self, image_id: str) -> list[str]:
        """Live replicas holding `image_id` as their own (not a borrowed copy)."""
        key = ("", image_id)
        return [
            name
            for name in sorted(self.replicas)
            if self.running(name) and self.owns_picture(name, key)
        ]

    def owns_picture(self, name: str, key: Any, digest: str | None = None) -> bool:
        """Whether `name` holds a picture of `key` as its own: not a borrowed copy, nor one
        its lender told it to forget, dropped once the requests that may read it end, nor
        one on its way out that its receiver has already taken in."""
        replica = self.replicas[name]
        held = replica.engine.pictures.image_version(key)
        role = replica.handoff.ownership.role(key)
        if role is Role.SENDING:
            target = self.replicas.get(replica.handoff.ownership.peer(key) or "")
            if (
                held is not None
                and target is not None
                and target.engine.adopted.get(key) == held[0]
            ):
                return False
        return (
            held is not None
            and digest in (None, held[0])
            and role is not Role.BORROWED
            and replica.handoff._stale.get(key) != held[0]
        )

    def check_embed(self, name: str, key: Any, digest: str) -> None:
        """An embed on `name`, which held no picture under `key`: no live replica may hold
        that picture as its own (nor be sending it), else the image was embedded twice
        (lossy schedules excepted). An embed that replaces another picture is a client's
        write changing the content, whatever other replicas hold."""
        holders = [
            other
            for other in sorted(self.replicas)
            if other != name and self.running(other) and self.owns_picture(other, key, digest)
        ]
        self.log(f"{name} embeds {key[1]} {digest[:6]}")
        # A stopped replica's process is gone on Ray: what its coroutines still do here
        # (a request that waited past the stop) never happens there.
        if holders and not self.lossy and self.running(name):
            now = asyncio.get_running_loop().time()
            self.violation(f"{key[1]} embedded again on {name} at {now:.3f}, held by {holders}")

    def check_bookkeeping(self) -> None:
        for name in sorted(self.replicas):
            if not self.running(name):
                continue
            handoff = self.replicas[name].handoff
            try:
                handoff.ownership.check(handoff.engine.pictures.image_keys())
            except AssertionError as error:
                self.violation(f"invariant: {error}")
            if len(handoff._manifests) > len(self.replicas):
                self.violation(f"{name}: {len(handoff._manifests)} manifests kept")

    def check_quiet(self, name: str) -> None:
        """Once every hand-off is over: nothing moving, nothing waiting, and after a sweep
        only what is held is tracked."""
        handoff = self.replicas[name].handoff
        handoff._sweep()
        try:
            handoff.ownership.quiet()
            handoff.ownership.check(handoff.engine.pictures.image_keys(), swept=True)
        except AssertionError as error:
            self.violation(f"at rest: {error}")
        left = {
            "fetches": len(handoff._fetches),
            "serving": len(handoff._serving),
            "quiet": len(handoff._quiet),
            "stale": len(handoff._stale) + len(handoff._stale_readers),
            "coming": len(handoff._coming),
        }
        if any(left.values()):
            self.violation(f"at rest: {name} still tracks {left}")

    # The schedule --------------------------------------------------------------------------

    async def run(self) -> None:
        for _ in range(2):
            self.add_replica()
        await asyncio.sleep(0.5)
        for _ in range(self.events):
            await asyncio.sleep(self.rng.expovariate(1 / 0.05))
            event = self.rng.choices(["client", "add", "remove", "kill"], [40, 2, 2, 1])[0]
            if event in self.off:
                continue
            if event == "client":
                self.spawn(self.client())
            elif event == "add" and len([s for s in self.states.values() if s == "running"]) < 4:
                self.add_replica()
            elif event in ("remove", "kill"):
                self.remove_replica(crash=event == "kill")
        # Quiet: every ring known everywhere, every hand-off done; then a click per id.
        await asyncio.sleep(HANDOFF_TIMEOUT_S * 3)
        for name in sorted(self.replicas):
            if self.running(name):
                self.replicas[name].handoff.on_ring(self.truth)
        self.ingress_rings.append(self.truth)
        await asyncio.sleep(HANDOFF_TIMEOUT_S * 2)
        for image_id in IDS:
            op = Op(image_id, asyncio.get_running_loop().time(), None)
            self.checker.ops.append(op)
            await self._request(op, "click", None, None)
        for name in sorted(self.replicas):
            if self.running(name):
                self.check_quiet(name)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _suppress_all:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], (Exception, asyncio.CancelledError))


# What a schedule may do, each of which a run can leave out (`simulate(off=...)`).
FAULTS = frozenset({"late", "lost", "skip", "old-ingress", "helpers", "kill", "remove", "add"})


def simulate(seed: int, events: int = 60, off: frozenset[str] = frozenset()) -> World:
    """Run the schedule of `seed` (without the faults in `off`); returns the world, its
    `checker.violations` and its trace."""
    world = World(seed, events, off)
    loop = SimLoop(world.rng)
    saved = asyncio.to_thread, segmenter_module.run
    asyncio.to_thread, segmenter_module.run = _inline, sim_run  # type: ignore[assignment]
    try:
        loop.run_until_complete(world.run())
    finally:
        asyncio.to_thread, segmenter_module.run = saved  # type: ignore[assignment]
        loop.close()
    return world


# The profiles the tests run (`tests/unit/test_handoff_simulation.py`): the faults each
# leaves out. scale-out: replicas only added (the clients' own faults, hang-ups, failures
# after an embed and evictions stay on); scale-in-out: replicas added and removed
# gracefully, the transport otherwise faultless; all: every fault.
PROFILES = {
    "scale-out": frozenset({"late", "lost", "skip", "old-ingress", "helpers", "kill", "remove"}),
    "scale-in-out": frozenset({"late", "lost", "skip", "old-ingress", "helpers", "kill"}),
    "all": frozenset(),
}


if __name__ == "__main__":
    profile = sys.argv[2] if len(sys.argv) > 2 else "all"
    world = simulate(int(sys.argv[1]), off=PROFILES[profile])
    print("\n".join(world.trace))
    print(f"violations: {world.checker.violations or 'none'}")
