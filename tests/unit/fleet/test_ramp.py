"""The traffic ramp on a fake clock and fake instances: weights rise linearly, pause while the
new replica does worse than its peers, resume, drop it after a long pause; a first replica
and ``ramp_s = 0`` take full traffic at once; memory stays bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from controlplane.fleet.ramp import MAX_INSTANCES_PER_MODEL, Ramp, RampTarget
from controlplane.fleet.ramp_stats import summarize, worse
from controlplane.traffic.observation import Observation


@dataclass(eq=False)
class Target:
    name: str
    models: set[str] = field(default_factory=lambda: {"m"})
    weights: dict[str, float] = field(default_factory=dict)

    def serves(self, model: str) -> bool:
        return model in self.models


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fleet(*names: str) -> tuple[list[Target], Clock, list[tuple[str, str, str]], Ramp]:
    targets = [Target(n) for n in names]
    clock = Clock()
    drops: list[tuple[str, str, str]] = []

    def replicas() -> Sequence[RampTarget]:
        return targets

    ramp = Ramp(replicas, 30.0, 0.05, clock,
                on_drop=lambda i, m, why: drops.append((i, m, why)), min_samples=20)
    return targets, clock, drops, ramp


def feed(ramp: Ramp, instance: str, n: int, *, latency_s: float = 0.01,
         errors: int = 0) -> None:
    for k in range(n):
        ramp.observe(instance, "m", latency_s, k >= errors)


def test_the_weight_rises_linearly_then_its_entry_goes() -> None:
    (a, b), clock, _, ramp = fleet("a", "b")
    ramp.begin("b", "m", "placement")
    assert b.weights == {"m": 0.05} and a.weights == {}
    assert ramp.tick() is False  # no time passed: nothing to republish
    for elapsed, weight in ((7.5, 0.2875), (15.0, 0.525), (22.5, 0.7625)):
        clock.now = 1000.0 + elapsed
        assert ramp.tick() is True
        assert b.weights["m"] == pytest.approx(weight)
    (view,) = ramp.views()
    assert (view.instance, view.model, view.why, view.paused) == ("b", "m", "placement", False)
    assert view.started_s_ago == pytest.approx(22.5) and view.weight == pytest.approx(0.7625)
    clock.now = 1030.0
    assert ramp.tick() is True and b.weights == {}  # full weight: back to the default 1
    assert ramp.views() == [] and ramp.tick() is False


def test_a_first_replica_and_a_zero_ramp_take_full_traffic_at_once() -> None:
    (a, b), clock, _, ramp = fleet("a", "b")
    a.models = set()  # b is the only replica of m
    b.weights["m"] = 0.0  # what an earlier drop left
    ramp.begin("b", "m", "placement")
    assert b.weights == {} and ramp.views() == [] and ramp.tick() is False

    a.models = {"m"}
    off = Ramp(lambda: [a, b], 0.0, 0.05, clock)
    off.begin("b", "m", "failover")
    assert b.weights == {} and off.views() == []

    a.weights["m"] = 0.0  # a peer the router no longer picks is no peer
    ramp.begin("b", "m", "placement")
    assert b.weights == {}


def test_a_ramping_replica_counts_as_a_peer_for_a_new_one_but_is_no_yardstick() -> None:
    (a, b, c), clock, _, ramp = fleet("a", "b", "c")
    ramp.begin("c", "m", "scale-out")
    a.models = set()  # a leaves: c, still ramping, is b's only peer
    ramp.begin("b", "m", "scale-out")
    assert b.weights == {"m": 0.05} and c.weights == {"m": 0.05}  # c shares: b ramps too
    feed(ramp, "b", 40, errors=40)
    feed(ramp, "c", 40)
    clock.now += 1
    ramp.tick()
    # neither pauses: a ramping replica is not what the other is measured against
    assert [(v.instance, v.paused, v.peers_error_rate) for v in ramp.views()] == [
        ("b", False, None), ("c", False, None)]


def test_a_worse_error_rate_pauses_the_weight_and_a_recovery_resumes_it() -> None:
    (_, b), clock, drops, ramp = fleet("a", "b")
    ramp.begin("b", "m", "failover")
    feed(ramp, "a", 100, errors=1)
    feed(ramp, "b", 19, errors=19)
    clock.now = 1006.0
    ramp.tick()
    assert not ramp.views()[0].paused  # 19 outcomes: fewer than min_samples, no verdict
    feed(ramp, "b", 1, errors=1)  # 20 outcomes, all failed
    clock.now = 1006.0  # the pause begins at this tick
    ramp.tick()
    (view,) = ramp.views()
    assert view.paused and view.error_rate == 1.0 and view.peers_error_rate == 0.01
    assert view.paused_because is not None and "error rate" in view.paused_because
    held = b.weights["m"]
    assert held == pytest.approx(0.05 + 0.95 * 6 / 30)
    clock.now = 1016.0
    assert ramp.tick() is False and b.weights["m"] == held and ramp.views()[0].paused_s == 10.0
    feed(ramp, "b", 200)  # the window's errors age out
    assert ramp.tick() is False  # resumed now, from where it stopped
    assert not ramp.views()[0].paused
    clock.now = 1021.0  # 5 s later: 11 s of ramp in all
    assert ramp.tick() is True and b.weights["m"] == pytest.approx(0.05 + 0.95 * 11 / 30)
    clock.now = 1046.0  # 30 s of ramp, the 10 s pause excluded
    assert ramp.tick() is True and b.weights == {} and drops == []


def test_an_error_rate_within_the_margin_does_not_pause() -> None:
    (_, b), clock, _, ramp = fleet("a", "b")
    ramp.begin("b", "m", "placement")
    feed(ramp, "a", 100, errors=2)  # 2 %
    feed(ramp, "b", 100, errors=6)  # 6 %: within 2 % + 5 %
    clock.now += 3
    assert ramp.tick() is True and b.weights["m"] == pytest.approx(0.05 + 0.95 * 3 / 30)
    assert not ramp.views()[0].paused
    feed(ramp, "b", 8, errors=8)  # 14 of 108 (13 %): beyond the margin
    clock.now += 3
    ramp.tick()  # paused from now: its weight as of 6 s holds
    clock.now += 3
    assert ramp.tick() is False and ramp.views()[0].paused
    assert b.weights["m"] == pytest.approx(0.05 + 0.95 * 6 / 30)


def test_a_p50_over_twice_the_peers_pauses_and_one_under_does_not() -> None:
    (_, b), clock, _, ramp = fleet("a", "b")
    ramp.begin("b", "m", "placement")
    feed(ramp, "a", 100, latency_s=0.010)
    feed(ramp, "b", 40, latency_s=0.019)
    clock.now += 3
    ramp.tick()
    assert not ramp.views()[0].paused
    feed(ramp, "b", 200, latency_s=0.025)
    clock.now += 3
    ramp.tick()
    (view,) = ramp.views()
    assert view.paused and view.p50_s == 0.025 and view.peers_p50_s == 0.010
    assert view.paused_because is not None and "p50 latency 25.0 ms" in view.paused_because
    assert b.weights["m"] == pytest.approx(0.05 + 0.95 * 6 / 30)  # paused at 6 s
    clock.now += 20
    assert ramp.tick() is False and b.weights["m"] == pytest.approx(0.24)  # held


def test_a_pause_longer_than_the_ramp_drops_the_replica() -> None:
    (a, b), clock, drops, ramp = fleet("a", "b")
    ramp.begin("b", "m", "scale-out")
    feed(ramp, "a", 100)
    feed(ramp, "b", 50, errors=25)
    clock.now = 1002.0
    ramp.tick()  # paused from here
    clock.now = 1032.0
    assert ramp.tick() is False and drops == []  # 30 s: not longer than the ramp yet
    clock.now = 1032.5
    assert ramp.tick() is True
    assert b.weights == {"m": 0.0} and ramp.views() == []
    ((instance, model, why),) = drops
    assert (instance, model) == ("b", "m") and "error rate 50.0%" in why
    assert ramp.tick() is False
    ramp.cancel("b", "m")  # the fleet removed the replica: no weight left behind
    assert b.weights == {} and a.weights == {}


def test_a_paused_replica_whose_peers_leave_resumes_and_is_not_dropped() -> None:
    (a, b), clock, drops, ramp = fleet("a", "b")
    ramp.begin("b", "m", "placement")
    feed(ramp, "a", 100)
    feed(ramp, "b", 50, errors=50)
    clock.now += 1
    ramp.tick()
    assert ramp.views()[0].paused
    a.models = set()  # a's replica went away: b is the only one
    clock.now += 60
    ramp.tick()
    assert drops == [] and b.weights.get("m", 1.0) > 0


def test_cancel_ends_the_ramps_of_a_replica_or_of_a_whole_instance() -> None:
    (a, b), clock, _, ramp = fleet("a", "b")
    a.models = b.models = {"m", "n"}
    ramp.begin("b", "m", "placement")
    ramp.begin("b", "n", "placement")
    b.weights["canary"] = 0.5  # not the ramp's: left alone
    ramp.cancel("b", "m")
    assert b.weights == {"n": 0.05, "canary": 0.5}
    assert [(v.instance, v.model) for v in ramp.views()] == [("b", "n")]
    ramp.cancel("b")
    assert b.weights == {"canary": 0.5} and ramp.views() == []
    clock.now += 10
    assert ramp.tick() is False


def test_an_instance_that_left_without_a_cancel_ends_its_ramp() -> None:
    targets, clock, _, ramp = fleet("a", "b")
    ramp.begin("b", "m", "placement")
    del targets[1]
    clock.now += 5
    assert ramp.tick() is False and ramp.views() == []


def test_memory_is_bounded_and_only_ramping_models_are_tracked() -> None:
    _, _, _, ramp = fleet("a", "b")
    for k in range(1000):
        ramp.observe("a", "m", 0.01, True)  # no ramp for m yet: not kept
        ramp.observe(f"x{k}", "other", 0.01, True)
    assert ramp._windows == {}
    ramp.begin("b", "m", "placement")
    for k in range(10_000):
        ramp.observe("a", "m", 0.01, True)
        ramp.observe(f"x{k}", "m", 0.01, True)
    per = ramp._windows["m"]
    assert len(per) == MAX_INSTANCES_PER_MODEL and len(per["a"]) == 200
    ramp.cancel("b")
    assert ramp._windows == {}  # the last ramp of m ended: its outcomes go


def test_observations_feed_the_ramp_with_the_replica_that_answered() -> None:
    _, clock, _, ramp = fleet("a", "b")
    ramp.begin("b", "m", "placement")

    def obs(instance: str | None, outcome: str = "OK", latency: float = 0.01,
            wait_s: float | None = None) -> Observation:
        return Observation("m", "", (), 0.0, latency, outcome, wait_s is not None, wait_s,
                           instance=instance)

    for _ in range(50):
        ramp.observation(obs("a"))
        ramp.observation(obs("b", "INVALID_ARGUMENT"))  # the client's fault: ignored
        ramp.observation(obs(None, "UNAVAILABLE"))  # no replica reached: ignored
        ramp.observation(obs("b", latency=2.015, wait_s=2.0))  # its load's wait excluded
    clock.now += 1
    ramp.tick()
    (view,) = ramp.views()
    assert not view.paused and view.error_rate == 0.0
    assert view.p50_s == pytest.approx(0.015) and view.peers_p50_s == 0.01
    for _ in range(50):
        ramp.observation(obs("b", "UNAVAILABLE"))
    ramp.tick()
    assert ramp.views()[0].error_rate == 0.5 and ramp.views()[0].paused


async def test_run_republishes_after_each_change() -> None:
    (_, b), clock, _, ramp = fleet("a", "b")
    ramp.begin("b", "m", "placement")
    published: list[float] = []

    async def publish() -> None:
        published.append(b.weights.get("m", 1.0))

    task = asyncio.create_task(ramp.run(0.001, publish))
    await asyncio.sleep(0.02)
    assert published == []  # nothing changed
    clock.now += 15
    for _ in range(100):
        await asyncio.sleep(0.001)
        if published:
            break
    clock.now += 15
    for _ in range(100):
        await asyncio.sleep(0.001)
        if len(published) == 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert published == [pytest.approx(0.525), 1.0]


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        Ramp(lambda: [], -1.0, 0.05)
    with pytest.raises(ValueError):
        Ramp(lambda: [], 30.0, 0.0)
    with pytest.raises(ValueError):
        Ramp(lambda: [], 30.0, 0.05, min_samples=300)


def test_worse_needs_samples_on_both_sides_and_a_real_latency_gap() -> None:
    fast = summarize([[(0.0005, True)] * 30], 20)
    slow = summarize([[(0.0015, True)] * 30], 20)  # 3x, but 1 ms apart: noise
    assert (fast.samples, fast.error_rate, fast.p50_s) == (30, 0.0, 0.0005)
    assert worse(slow, fast, 0.05, 2.0) is None
    failing = summarize([[(None, False)] * 10, [(0.01, True)] * 10], 20)  # pooled
    assert (failing.error_rate, failing.p50_s) == (0.5, None)  # 10 latencies: too few
    assert worse(failing, fast, 0.05, 2.0) is not None
    assert worse(failing, summarize([[(0.01, True)] * 19], 20), 0.05, 2.0) is None
