"""Routing: only ready replicas on serving, non-draining instances; fewest in flight wins."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from controlplane.fleet.states import InstanceState
from controlplane.serving.router import Router
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet, runtime


async def test_only_ready_replicas_on_routable_instances_are_picked(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b", "c"))
    a, b, _ = fleet.order
    for rt in (a, b):
        await fleet.load("hot", trigger="api", instance=rt.name)
    assert {rt.name for rt in fleet.router.candidates("hot")} == {"a", "b"}
    b.move(InstanceState.DRAINING, "test")
    assert [rt.name for rt in fleet.router.candidates("hot")] == ["a"]
    runtime(a)[1].serving = False
    assert fleet.router.pick("hot") is None
    assert fleet.router.pick("rare") is None  # cold everywhere


async def test_the_replica_with_fewer_requests_in_flight_wins(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    for rt in (a, b):
        await fleet.load("hot", trigger="api", instance=rt.name)
    assert a.upstream is not None and b.upstream is not None
    a.upstream.outstanding = 3
    assert fleet.router.pick("hot") is b
    b.upstream.outstanding = 5
    assert fleet.router.pick("hot") is a


async def test_power_of_two_choices_spreads_load_and_avoids_the_busiest(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b", "c", "d"))
    for rt in fleet.order:
        await fleet.load("hot", trigger="api", instance=rt.name)
    router = Router(lambda: fleet.order, rng=random.Random(7))
    busiest = fleet.order[3]
    assert busiest.upstream is not None
    busiest.upstream.outstanding = 100
    picks = Counter(router.pick("hot").name for _ in range(3000))  # type: ignore[union-attr]
    assert picks["d"] == 0  # of any two drawn, the busiest always loses
    assert all(900 <= picks[n] <= 1100 for n in "abc"), picks
