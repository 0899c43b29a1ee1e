"""The hand-off under seeded schedules (`tests/unit/handoff_simulation.py`): the real replica,
hand-off, ownership and pictures code on virtual time, every order of events chosen by a seed.

- `SIM_SEEDS` (default 300): how many seeds the scale-out and the scale in and out runs
  explore (each profile's faults: `PROFILES` in the simulation);
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
    seeds = int(os.environ.get("SIM_SEEDS", "300"))
    answers = 0
    for seed in range(seeds):
        if seed in RESIDUAL_SCALE_OUT:
            continue
        world = simulate(seed, off=SCALE_OUT)
        assert not world.checker.violations, explain(world)
        answers += sum(op.outcome == "ok" for op in world.checker.ops)
    assert answers > seeds * 20  # the schedules do answer clients


@pytest.mark.skipif("SIM_SEED" in os.environ, reason="SIM_SEED runs one seed")
def test_scale_in_and_out_with_the_same_clients():
    """Replicas added and removed gracefully (their images sent as they stop), the same
    clients: no violation, but in the known residual seeds (below)."""
    seeds = int(os.environ.get("SIM_SEEDS", "300"))
    for seed in range(seeds):
        if seed in RESIDUAL_SCALE_IN_OUT:
            continue
        world = simulate(seed, off=SCALE_IN_OUT)
        assert not world.checker.violations, explain(world)


# Seeds each of which broke a check before a fix (the scale-out ones: a 404 or a second embed
# while a replica that never saw the new owner's rings still held the image, an image sent
# away while a hung-up request's embed still ran, a request sent on by a replica whose ring
# was behind; the scale in and out ones: images relayed by a replica the new owner never
# knew, a forget to a stopped helper holding up a hand-off, a delivery to an owner of an
# older ring, an older picture answered from while a newer one was announced on its way).
FIXED_SCALE_OUT = (56, 76, 160, 519, 563, 1119)
FIXED_SCALE_IN_OUT = (1, 3, 16, 23, 42, 76, 89, 130, 135, 138, 142, 149, 160, 170, 189, 193, 231)
FIXED_SCALE_IN_OUT += (241, 270, 271, 291, 324, 463, 838, 898, 927)


@pytest.mark.parametrize(
    "seed, off",
    [(seed, SCALE_OUT) for seed in FIXED_SCALE_OUT]
    + [(seed, SCALE_IN_OUT) for seed in FIXED_SCALE_IN_OUT],
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
# orders"). Swept with `SIM_SEEDS=3000`: scale-out 4 of seeds 0-2999, scale in and out 134
# of them (9 of the 300 CI runs), every one listed; every fault on: 14 of seeds 0-59.
RESIDUAL_SCALE_OUT = (497, 2444, 2490, 2692)
RESIDUAL_SCALE_IN_OUT = (
    5,
    17,
    19,
    108,
    113,
    119,
    147,
    186,
    276,
    305,
    332,
    338,
    347,
    355,
    366,
    375,
    393,
    409,
    417,
    436,
    443,
    446,
    474,
    482,
    499,
    561,
    573,
    580,
    593,
    616,
    686,
    701,
    704,
    712,
    732,
    753,
    759,
    787,
    883,
    905,
    946,
    965,
    977,
    987,
    991,
    1001,
    1007,
    1020,
    1049,
    1055,
    1067,
    1104,
    1138,
    1199,
    1206,
    1218,
    1272,
    1293,
    1311,
    1312,
    1360,
    1436,
    1442,
    1476,
    1522,
    1547,
    1550,
    1567,
    1605,
    1606,
    1616,
    1654,
    1656,
    1672,
    1689,
    1702,
    1778,
    1809,
    1823,
    1863,
    1893,
    1920,
    1946,
    1948,
    1961,
    1971,
    2000,
    2003,
    2014,
    2044,
    2063,
    2069,
    2076,
    2096,
    2116,
    2119,
    2120,
    2124,
    2137,
    2146,
    2167,
    2190,
    2220,
    2233,
    2234,
    2284,
    2312,
    2319,
    2335,
    2361,
    2377,
    2411,
    2420,
    2444,
    2446,
    2477,
    2489,
    2542,
    2548,
    2562,
    2597,
    2606,
    2641,
    2728,
    2750,
    2752,
    2770,
    2779,
    2788,
    2801,
    2811,
    2885,
    2977,
    2996,
)
RESIDUAL_ALL_FAULTS = (3, 5, 6, 8, 12, 15, 20, 24, 27, 39, 40, 49, 50, 51)


@pytest.mark.parametrize(
    "seed, off",
    [(seed, SCALE_OUT) for seed in RESIDUAL_SCALE_OUT]
    + [(seed, SCALE_IN_OUT) for seed in RESIDUAL_SCALE_IN_OUT]
    + [(seed, frozenset()) for seed in RESIDUAL_ALL_FAULTS],
)
@pytest.mark.xfail(strict=True, reason="known residual order of events (see RESIDUAL_*)")
def test_residual_orders(seed, off):
    world = simulate(seed, off=off)
    assert not world.checker.violations, explain(world)


def test_the_faults_are_named():
    assert SCALE_OUT < FAULTS and SCALE_IN_OUT < FAULTS
