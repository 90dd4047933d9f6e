"""Crashes traced to the models in them; a model in two crashes is quarantined fleet-wide."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.errors import ModelLoadFailed
from controlplane.fleet.crashes import CrashTracker
from controlplane.lifecycle.states import ModelState
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_model_in_flight_at_two_crashes_is_quarantined_everywhere(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, _b = fleet.order
    clock = Clock()
    tracker = CrashTracker(fleet, clock=clock)
    await fleet.load("hot", trigger="replica", instance="b")
    await fleet.load("warm", trigger="replica", instance="a")
    assert a.upstream is not None
    # crash 1: hot in flight when the exit is seen; warm's request failed just after it
    a.upstream.begin("hot")
    tracker.crashed(a, "tritonserver (pid 1) was killed by signal 11 (SIGSEGV)")
    a.upstream.end("hot")
    clock.now += 0.5
    tracker.request_failed("a", "warm", "UNAVAILABLE")
    tracker.request_failed("a", "rare", "INVALID_ARGUMENT")  # not a broken call
    clock.now += 1.0
    assert tracker.cause("a") == {"hot", "warm"}
    assert tracker.cause("a") == frozenset()  # asked once per crash
    assert not tracker.quarantined
    # crash 2, minutes later: only hot
    clock.now += 120
    tracker.request_failed("a", "hot", "UNAVAILABLE")
    tracker.crashed(a, "tritonserver (pid 2) was killed by signal 11 (SIGSEGV)")
    assert tracker.cause("a") == {"hot"}
    assert list(tracker.quarantined) == ["hot"] and "2 crashes" in tracker.quarantined["hot"]
    assert tracker.excused(frozenset({"hot", "warm"})) and not tracker.excused(
        frozenset({"warm"}))
    await asyncio.sleep(0.05)  # its ready replica on b is unloaded: it would crash b too
    assert [s.state for s in fleet.replicas("hot")] == [ModelState.COLD, ModelState.COLD]
    assert all(s.quarantined for s in fleet.replicas("hot"))
    with pytest.raises(ModelLoadFailed, match="quarantined"):
        await fleet.load("hot", trigger="gateway")
    # the operator's load ends it, and the history starts afresh
    await fleet.load("hot", trigger="api")
    assert not any(s.quarantined for s in fleet.replicas("hot"))
    assert not tracker.excused(frozenset({"hot"})) and not tracker.quarantined
    await tracker.close()


async def test_crashes_far_apart_do_not_quarantine(tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a",))
    (a,) = fleet.order
    clock = Clock()
    tracker = CrashTracker(fleet, clock=clock, window_s=600)
    for _ in range(2):
        tracker.request_failed("a", "hot", "UNAVAILABLE")
        tracker.crashed(a, "signal 11")
        tracker.cause("a")
        clock.now += 700
    assert not tracker.quarantined
    await tracker.close()
