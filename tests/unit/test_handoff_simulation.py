"""The hand-off under seeded schedules (`tests/unit/handoff_simulation.py`): the real replica,
hand-off, ownership and pictures code on virtual time, every order of events chosen by a seed.

- `SIM_SEEDS` (default 1000): how many seeds the scale-out and the scale in and out runs
  explore (each profile's faults: `PROFILES` in the simulation); `SIM_FAULT_SEEDS` (default
  300): how many the run with every fault explores;
- `SIM_SEED=n`: run that one seed with every fault, print its trace, and fail on a violation.
A failure names its seed; `python -m tests.unit.handoff_simulation n PROFILE` replays it with
its trace."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from tests.unit.handoff_simulation import FAULTS, PROFILES, simulate

SCALE_OUT = PROFILES["scale-out"]
SCALE_IN_OUT = PROFILES["scale-in-out"]


@pytest.fixture(autouse=True)
def quiet_logs():
    logging.disable(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coroutines of cancelled tasks at a schedule's end
        yield
    logging.disable(logging.NOTSET)


def explain(world) -> str:
    return f"seed {world.seed}: {world.checker.violations[:3]} (replay: SIM_SEED={world.seed})"


@pytest.mark.skipif("SIM_SEED" in os.environ, reason="SIM_SEED runs one seed")
def test_scale_out_with_clients_clicking_resending_failing_and_hanging_up():
    """Replicas added while clients click by id, send new bytes or the same again (digest
    first or in full), fail after an embed and hang up: no violation, in any order (no
    stale answer, no 404 and no second embed of an image a live replica holds)."""
    seeds = int(os.environ.get("SIM_SEEDS", "1000"))
    answers = 0
    for seed in range(seeds):
        world = simulate(seed, off=SCALE_OUT)
        assert not world.checker.violations, explain(world)
        answers += sum(op.outcome == "ok" for op in world.checker.ops)
    assert answers > seeds * 20  # the schedules do answer clients


@pytest.mark.skipif("SIM_SEED" in os.environ, reason="SIM_SEED runs one seed")
def test_scale_in_and_out_with_the_same_clients():
    """Replicas added and removed gracefully (their images sent as they stop), the same
    clients: no violation."""
    seeds = int(os.environ.get("SIM_SEEDS", "1000"))
    for seed in range(seeds):
        world = simulate(seed, off=SCALE_IN_OUT)
        assert not world.checker.violations, explain(world)


@pytest.mark.skipif("SIM_SEED" in os.environ, reason="SIM_SEED runs one seed")
def test_every_fault_at_once():
    """Messages late, twice or lost, routers skipping rings, an ingress on an old ring,
    helpers, replicas added, removed and killed: no violation (the known residual seeds
    apart: `test_residual_orders`)."""
    seeds = int(os.environ.get("SIM_FAULT_SEEDS", "300"))
    for seed in range(seeds):
        if seed in RESIDUAL_ALL_FAULTS:
            continue
        world = simulate(seed)
        assert not world.checker.violations, explain(world)


# Seeds each of which broke a check before a fix (the scale-out ones: a 404 or a second embed
# while a replica that never saw the new owner's rings still held the image, an image sent
# away while a hung-up request's embed still ran, a request sent on by a replica whose ring
# was behind, a borrowed copy dropped at a ring change under a request that had just fetched
# it; the scale in and out ones: images relayed by a replica the new owner never knew, a
# forget to a stopped helper holding up a hand-off, a delivery to an owner of an older ring,
# an older picture answered from while a newer one was announced on its way, a request sent
# on whose ring changed while it waited, a leaver's image sent to a replica the receiver knew
# had left, an earlier owner ranked after a replica on its first ring only, "settled" said
# while an image listed as on its way was still leaving, "coming" heard while the image was
# leaving for its sender, a request that came while a hand-off waited for others to end,
# new bytes sent on to a helper stored in its borrowed copy, a new owner told to forget the
# copy it had borrowed and then written to, a request served while its image was leaving, a
# relay's "settled" overtaking its "coming" for an image it had just received, a request
# sent on to a replica whose ring was ahead answered 404 there once its sender sent the image
# elsewhere, a borrowed copy pushed out of the cache before the engine read it; with every
# fault: a relay killed while an image was on its way to it from a replica its receiver
# never knew of, an answer from a replaced picture given before a helper had forgotten the
# old one, a hand-off held up by requests an ingress on an old ring kept sending to the
# sender, a copy taken over from a lender still answering from its own picture, a fetch's
# copy kept as borrowed by a replica that had become the owner meanwhile, an owner told to
# forget while its taken-over copy's picture was on its way; the last round's seeds with
# every fault also failed once calls to a stopped replica failed at once, as on Ray; then
# with every fault, bytes written to a borrowed copy (restamped there, it outranked its
# lender's newer picture; or lost with the helper), a request waiting on an image that
# another's fetch brought as a borrowed copy served from it, a fetch from a killed owner
# holding a hand-off up for the whole timeout; scale-in-out 1490: a previous owner's
# manifest for a ring before the one that gave it the image taken as its last word).
FIXED_SCALE_OUT = (56, 76, 160, 497, 519, 563, 1119, 2444, 2490, 2692)
FIXED_SCALE_IN_OUT = (1, 3, 5, 6, 16, 23, 42, 68, 76, 89, 130, 135, 138, 142, 149, 160, 161)
FIXED_SCALE_IN_OUT += (162, 170, 171, 189, 193, 197, 231, 241, 270, 271, 291, 324, 463, 838)
FIXED_SCALE_IN_OUT += (898, 927, 2577, 2582, 2597, 2606, 2607, 2650, 2673, 2679, 2700, 2712)
FIXED_SCALE_IN_OUT += (2714, 2730, 2781, 2976, 987, 1053, 1224, 1343, 1875, 2008, 2167)
FIXED_SCALE_IN_OUT += (776, 844, 853, 1260, 2457, 2874, 2885, 1354, 2441, 2925, 1103, 1490)
FIXED_ALL_FAULTS = (5, 6, 9, 20, 30, 34, 48, 73, 170, 177, 211, 213, 237, 272, 576, 970, 972)
FIXED_ALL_FAULTS += (1527, 1626, 1075, 1144, 1214, 1281, 1759, 2013, 2381, 2704, 2997)
# Met under variants of the latest fixes on the way to them (not kept), passing since.
FIXED_ALL_FAULTS += (609, 673, 905, 968, 976, 1083, 1249, 1465, 1692, 2158, 2484, 2969)


@pytest.mark.parametrize(
    "seed, off",
    [(seed, SCALE_OUT) for seed in FIXED_SCALE_OUT]
    + [(seed, SCALE_IN_OUT) for seed in FIXED_SCALE_IN_OUT]
    + [(seed, frozenset()) for seed in FIXED_ALL_FAULTS],
)
def test_fixed_orders(seed, off):
    world = simulate(seed, off=off)
    assert not world.checker.violations, explain(world)


def test_a_seed_replays_exactly():
    first, again = simulate(7), simulate(7)
    assert first.trace == again.trace and len(first.trace) > 100


def test_one_seed():
    """`SIM_SEED=n` replays schedule n with its trace printed (`-s`); seed 0 by default."""
    world = simulate(int(os.environ.get("SIM_SEED", "0")))
    print("\n".join(world.trace))
    assert not world.checker.violations, explain(world)


# Seeds that still break a check: each must keep failing until fixed (strict), so that a
# fix is noticed and the seed moves into the runs above (docs/operations.md, "Residual
# orders"). Swept: none of seeds 0-2999 of either graceful profile; 5 of seeds 0-2999 with
# every fault, listed here, each a 404 after a replica was killed (no stale answer).
RESIDUAL_ALL_FAULTS = (264, 1181, 1684, 2429, 2447)


@pytest.mark.parametrize("seed", RESIDUAL_ALL_FAULTS)
@pytest.mark.xfail(strict=True, reason="known residual order of events (see RESIDUAL_*)")
def test_residual_orders(seed):
    world = simulate(seed)
    assert not world.checker.violations, explain(world)


def test_the_faults_are_named():
    assert SCALE_OUT < FAULTS and SCALE_IN_OUT < FAULTS
